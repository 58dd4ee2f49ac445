"""simplenet_jax.workdir_lock: one run per workdir; a lock whose holder is gone is taken over."""

import json
import os
import socket
import subprocess
import time

import pytest

from simplenet_jax import workdir_lock


def test_a_second_holder_stops_with_one_sentence_naming_the_first(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path):
    holder = json.loads((tmp_path / ".lock").read_text())
    assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
    with pytest.raises(workdir_lock.WorkdirBusyError) as info:
      with workdir_lock.WorkdirLock(tmp_path):
        pass
    assert str(info.value).startswith(f"workdir {tmp_path} is in use by another run (pid {os.getpid()} on host "
                                      f"{socket.gethostname()}, last seen at ")
    assert (tmp_path / ".lock").exists()  # the refused run did not remove the holder's lock
  assert not (tmp_path / ".lock").exists()  # released


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(tmp_path, capsys):
  process = subprocess.Popen(["sleep", "0"])  # its pid is free once it is reaped
  process.wait()
  (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": process.pid,
                                              "renewed": time.time()}))
  with workdir_lock.WorkdirLock(tmp_path):
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  assert f"warning: taking over workdir {tmp_path} from a run that is gone (pid {process.pid}" in capsys.readouterr().out


def test_another_hosts_lock_is_stale_when_it_stopped_renewing(tmp_path):
  record = {"host": "elsewhere", "pid": 1, "renewed": time.time()}
  (tmp_path / ".lock").write_text(json.dumps(record))
  with pytest.raises(workdir_lock.WorkdirBusyError, match="pid 1 on host elsewhere"):
    with workdir_lock.WorkdirLock(tmp_path):
      pass
  record["renewed"] = time.time() - workdir_lock.STALE_S - 1
  (tmp_path / ".lock").write_text(json.dumps(record))
  with workdir_lock.WorkdirLock(tmp_path):
    pass


def test_the_holder_renews_its_lock(tmp_path):
  with workdir_lock.WorkdirLock(tmp_path, renew_s=0.05):
    first = json.loads((tmp_path / ".lock").read_text())["renewed"]
    time.sleep(0.3)
    assert json.loads((tmp_path / ".lock").read_text())["renewed"] > first
