"""Block device names: which ones are stable, and which belong to dom0.

The scratch and swap devices are re-keyed at every boot, so every byte on
them is destroyed at every boot. A name that can point at another disk
tomorrow (/dev/sdb3) or that names dom0's own volumes is a data-loss bug,
so both are refused here, before anything is rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qubes_ephemeral.description.problems import Invalid
from qubes_ephemeral.description.values import check_path_chars, kind_of

DOM0_VG = "qubes_dom0"
# dom0's root filesystem and the thin pools that hold dom0 and every qube.
DOM0_PROTECTED_LVS = frozenset({"root", "pool00", "root-pool", "vm-pool"})
DOM0_SWAP_LV = "swap"
# LVM's hidden sub-volumes (thin pool data/metadata, RAID/mirror legs, spares).
# LVM's hidden sub-volumes (thin pool data/metadata, cache and VDO layers,
# origins kept by a cache or a writecache, RAID/mirror legs, spares).
LVM_INTERNAL_SUFFIXES = ("_tmeta", "_tdata", "_tierdata", "_pmspare", "_mlog", "_cdata", "_cmeta", "_cpool", "_vdata",
                         "_vpool", "_corig", "_wcorig", "_vorigin", "_imeta", "_iorig")  # fmt: skip
LVM_INTERNAL_INFIXES = ("_rimage_", "_rmeta_", "_mimage_", "_imeta_", "_iorig_")
# Device-mapper layers LVM stacks under a visible volume.
DM_LAYER_SUFFIXES = ("-tpool", "-real", "-cow", "-tdata", "-tmeta")

STABLE_BY = ("by-id", "by-partuuid", "by-partlabel")
# /dev subdirectories that are not volume groups.
NOT_VOLUME_GROUPS = frozenset(
    {
        "block", "bsg", "bus", "char", "cpu", "disk", "dma_heap", "dri", "fd", "hugepages", "input",
        "mapper", "md", "mqueue", "net", "pts", "shm", "snd", "vfio", "xen", "usb", "v4l", "serial",
    }
)  # fmt: skip
LVM_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]*")
KERNEL_NAME = re.compile(
    r"(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+|mmcblk\d+|loop\d+|dm-\d+|md\d+|nbd\d+|sr\d+|zram\d+|ram\d+)"
    r"(p?\d+)?"
)
STABLE_HINT = "use an LVM path (/dev/VG/LV or /dev/mapper/VG-LV) or /dev/disk/by-id/, by-partuuid/ or by-partlabel/"


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    lv: str

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every name udev gives this volume; fstab may use any of them."""
        mapper = f"{_dm_escape(self.vg)}-{_dm_escape(self.lv)}"
        return (f"/dev/{self.vg}/{self.lv}", f"/dev/mapper/{mapper}", f"/dev/disk/by-id/dm-name-{mapper}")


def _dm_escape(name: str) -> str:
    return name.replace("-", "--")


def split_mapper_name(name: str) -> LogicalVolume | None:
    """Split a device-mapper name "VG-LV" (with "--" for a literal "-")."""
    match = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", name)
    if match is None:
        return None
    return LogicalVolume(match.group(1).replace("--", "-"), match.group(2).replace("--", "-"))


@dataclass(frozen=True)
class Device:
    path: str
    volume: LogicalVolume | None  # set when the path names an LVM volume

    @property
    def identity(self) -> str:
        """One name per device, whichever alias the user wrote."""
        return f"lvm:{self.volume.vg}/{self.volume.lv}" if self.volume else self.path

    @property
    def aliases(self) -> tuple[str, ...]:
        return self.volume.aliases if self.volume else (self.path,)


# Qubes' LVM pools name every volume vm-QUBE-VOLUME, in any volume group.
QUBE_VOLUME_PREFIX = "vm-"


def is_qube_volume(volume: LogicalVolume) -> bool:
    return volume.lv.startswith(QUBE_VOLUME_PREFIX)


def check_volume(volume: LogicalVolume, role: str) -> None:
    if not LVM_NAME.fullmatch(volume.vg) or not LVM_NAME.fullmatch(volume.lv):
        raise Invalid(f"'{volume.vg}/{volume.lv}' is not a valid LVM volume name", STABLE_HINT)
    lv = volume.lv
    if lv.endswith(LVM_INTERNAL_SUFFIXES) or any(infix in lv for infix in LVM_INTERNAL_INFIXES):
        raise Invalid(f"'{volume.vg}/{lv}' is an internal LVM sub-volume", "name a logical volume of your own")
    if lv.endswith(DM_LAYER_SUFFIXES):
        raise Invalid(f"'{volume.vg}/{lv}' is a device-mapper layer under another volume", "name the volume itself")
    if is_qube_volume(volume):
        raise Invalid(
            f"'{volume.vg}/{lv}' is a qube's volume; keying it destroys that qube",
            f"create a dedicated volume: lvcreate -L 32G -n ephemeral {volume.vg}",
        )
    if volume.vg != DOM0_VG:
        return
    if lv in DOM0_PROTECTED_LVS:
        raise Invalid(
            f"'{DOM0_VG}/{lv}' is dom0's own volume (root or a thin pool); keying it destroys the system",
            f"create a dedicated volume: lvcreate -L 32G -n ephemeral {DOM0_VG}",
        )
    if lv == DOM0_SWAP_LV and role != "swap":
        raise Invalid(f"'{DOM0_VG}/{lv}' is dom0's swap; it may only be used as swap.device", "move it to swap.device")


def parse_device(value: object, role: str) -> Device:
    """Validate a device path for ``role`` ("scratch" or "swap")."""
    if not isinstance(value, str):
        raise Invalid(f"expected a device path (a string), got {kind_of(value)}", STABLE_HINT)
    if not value:
        raise Invalid("the device path is empty", STABLE_HINT)
    if not value.startswith("/dev/"):
        raise Invalid(f"{value!r} is not an absolute path under /dev", STABLE_HINT)
    check_path_chars(value)
    parts = value.split("/")[2:]
    if any(part in ("", ".", "..") for part in parts):
        raise Invalid(f"{value!r} is not a normalised path", "remove '//', '.' and '..' and any trailing '/'")
    volume = _classify(value, parts)
    if volume is not None:
        check_volume(volume, role)
    return Device(value, volume)


def _classify(value: str, parts: list[str]) -> LogicalVolume | None:
    if len(parts) == 1:
        if KERNEL_NAME.fullmatch(parts[0]):
            raise Invalid(f"{value!r} is a kernel name that can change between boots", STABLE_HINT)
        raise Invalid(f"{value!r} is not a stable block device name", STABLE_HINT)
    if parts[0] == "mapper" and len(parts) == 2:
        return _mapper(value, parts[1])
    if parts[0] == "disk" and len(parts) == 3:
        if parts[1] == "by-uuid":
            raise Invalid(
                f"{value!r} names the filesystem on the device, which re-keying destroys: the name vanishes "
                "after the first boot, and a device with a filesystem holds data",
                "use by-partuuid/, by-partlabel/, by-id/ or an LVM path",
            )
        if parts[1] not in STABLE_BY:
            raise Invalid(f"{value!r} is not a stable block device name", STABLE_HINT)
        if parts[1] == "by-id":
            return _by_id(value, parts[2])
        return None
    if len(parts) == 2 and parts[0] not in NOT_VOLUME_GROUPS:
        return LogicalVolume(parts[0], parts[1])
    raise Invalid(f"{value!r} is not a stable block device name", STABLE_HINT)


def _mapper(value: str, name: str) -> LogicalVolume:
    if name.startswith("luks-") or name == "control":
        raise Invalid(
            f"{value!r} is a disk encryption mapping (dom0's disk); keying it destroys the system", STABLE_HINT
        )
    volume = split_mapper_name(name)
    if volume is None:
        raise Invalid(f"{value!r} is not an LVM volume (/dev/mapper/VG-LV)", STABLE_HINT)
    return volume


def _by_id(value: str, name: str) -> LogicalVolume | None:
    if name.startswith("dm-name-"):
        return _mapper(value, name.removeprefix("dm-name-"))
    if name.startswith("dm-uuid-CRYPT-"):
        raise Invalid(f"{value!r} is a disk encryption mapping; keying it destroys what is inside", STABLE_HINT)
    if name.startswith("dm-uuid-"):
        raise Invalid(f"{value!r} names a device-mapper device by an opaque UUID: which volume it is cannot be "
                      "checked", "name the volume by its LVM path (/dev/VG/LV)")  # fmt: skip
    if name.startswith("lvm-pv-uuid-"):
        raise Invalid(f"{value!r} is an LVM physical volume: it holds volume groups", "name a logical volume instead")
    return None
