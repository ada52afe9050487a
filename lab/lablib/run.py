"""Running commands, with errors that say what failed."""

import subprocess


class LabError(Exception):
    pass


def run(*cmd, check=True, capture=True, input=None, timeout=120):
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=capture, text=True, input=input, timeout=timeout
    )
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else ""
        raise LabError(f"{' '.join(map(str, cmd))} failed (exit {result.returncode}): {detail}")
    return result


def ok(*cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True).returncode == 0
