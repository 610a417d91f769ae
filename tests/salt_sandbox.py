"""Run the formula with salt-call against dom0-like files, never the host's.

Each run happens in a private mount namespace (unshare) where /etc, /var,
/usr, /run and /dev are overlays whose upper layers live in the sandbox
folder: Salt reads and writes the usual paths, the host's files never change,
and the state carries over from one run to the next, as on a real machine.
systemctl and dracut are recorders (there is no systemd here, and no template
to rebuild an initramfs in): the tests read their logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import qubes_emulation

ROOT = Path(__file__).resolve().parent.parent
FORMULA = ROOT / "ephemeral-formula"
SALT_CALL = Path(os.environ.get("SALT_CALL", ROOT / ".venv-salt" / "bin" / "salt-call"))
OVERLAID = ("/etc", "/var", "/usr", "/run", "/dev")

SHIM = """#!/bin/sh
if [ "$1" = --version ]; then echo "systemd 252 (252)"; echo "+PAM"; exit 0; fi
echo "$*" >> {log}
"""

ENTER = r"""
set -eu
W=$1; shift
for dir in {dirs}; do
    name=$(echo "$dir" | tr / _)
    mkdir -p "$W/upper$name" "$W/work$name"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$W/upper$name,workdir=$W/work$name" "$dir"
done
exec "$@"
""".replace("{dirs}", " ".join(OVERLAID))


class Sandbox:
    def __init__(self, folder: Path, pillar: str, formula: Path = FORMULA) -> None:
        """``formula``: the formula's file root (default: this repository's)."""
        self.folder = folder
        self.formula = formula
        # The Qubes admin commands, emulated (tests/qubes_emulation), on PATH.
        self.env = {**os.environ, **qubes_emulation.install(folder / "qubes", qubes_emulation.dom0_like_state())}
        self.qubes_state = Path(self.env["QUBES_EMULATION_STATE"])
        (folder / "conf").mkdir(parents=True)
        (folder / "conf/minion").write_text(f"file_client: local\nid: sandbox\nroot_dir: {folder}/run\n")
        self.log = folder / "systemctl.log"
        self.dracut_log = folder / "dracut.log"
        for name, log in (("systemctl", self.log), ("dracut", self.dracut_log)):
            log.touch()
            shim = folder / name
            shim.write_text(SHIM.format(log=log))
            shim.chmod(0o755)
        (folder / "pillar").mkdir()
        (folder / "pillar/top.sls").write_text("base:\n  '*':\n    - ephemeral\n")
        self.set_pillar(pillar)

    def set_pillar(self, pillar: str) -> None:
        tools = (f"\nephemeral_formula:\n  tools:\n    systemctl: {self.folder}/systemctl\n"
                 f"    dracut: {self.folder}/dracut\n")  # fmt: skip
        (self.folder / "pillar/ephemeral.sls").write_text(pillar + tools)

    def shell(self, script: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside the sandbox's view of the system (``extra_env``: more variables)."""
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", ENTER, "enter", str(self.folder),
             "sh", "-c", script],
            capture_output=True, text=True, check=False, env={**self.env, **(extra_env or {})},
        )  # fmt: skip

    def put(self, path: str, content: str) -> None:
        staged = self.folder / "staged"
        staged.write_text(content)
        result = self.shell(f"mkdir -p \"$(dirname '{path}')\" && cp '{staged}' '{path}'")
        assert result.returncode == 0, result.stderr

    def read(self, path: str) -> str | None:
        result = self.shell(f"cat '{path}'")
        return result.stdout if result.returncode == 0 else None

    def exists(self, path: str) -> bool:
        return self.shell(f"test -e '{path}' || test -L '{path}'").returncode == 0

    def salt_call(
        self, sls: str = "ephemeral", test: bool = False, before: str = "", extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run state.apply, its output as it is; ``before``: shell commands run
        first in the same namespace; ``extra_env``: more environment variables."""
        command = [str(SALT_CALL), "--local", f"--config-dir={self.folder}/conf", f"--file-root={self.formula}",
                   f"--pillar-root={self.folder}/pillar", "--out=json", "state.apply", sls]  # fmt: skip
        if test:
            command.append("test=True")
        script = " ".join(f"'{part}'" for part in command)
        return self.shell(f"{before} && {script}" if before else script, extra_env)

    def apply(
        self, sls: str = "ephemeral", test: bool = False, before: str = "", extra_env: dict[str, str] | None = None
    ) -> tuple[int, dict[str, dict[str, object]]]:
        """Run state.apply (see salt_call): its exit status and states."""
        result = self.salt_call(sls, test, before, extra_env)
        try:
            states = json.loads(result.stdout)["local"]
        except (ValueError, KeyError):
            raise AssertionError(
                f"salt-call gave no JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
            ) from None
        if isinstance(states, list):  # a rendering error: Salt returns the messages
            return result.returncode, {"render-error": {"result": False, "comment": "\n".join(states), "changes": {}}}
        return result.returncode, states

    def qubes(self, *argv: str) -> str:
        """Read through the emulated admin commands, as a user would."""
        result = subprocess.run(argv, capture_output=True, text=True, check=True, env=self.env)
        return result.stdout.strip()

    def qubes_calls(self) -> list[list[str]]:
        return json.loads(self.qubes_state.read_text())["calls"]

    def systemctl_calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    def dracut_calls(self) -> list[str]:
        return self.dracut_log.read_text().splitlines()


def available() -> str | None:
    """Why the Salt tests cannot run here, or None."""
    if not SALT_CALL.exists():
        return f"{SALT_CALL} is missing (scripts/test installs Salt 3007.16 there)"
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return "needs root and unshare for a private mount namespace"
    return None
