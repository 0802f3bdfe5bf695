"""A gs:// workdir against a real GCS emulator on localhost (gcp-storage-emulator): train, kill
the process with SIGKILL, resume from the bucket, and read the run back for inference.

orbax / tensorstore write the checkpoints to the emulator (TENSORSTORE_GCS_HTTP_URL); etils.epath
(gcsfs, STORAGE_EMULATOR_HOST) writes the tokenizer, metrics, TensorBoard events and loss.png."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from hope_jax.train.checkpoint import config_to_json

from .helpers import tiny_config

pytest.importorskip("gcsfs")
emulator = pytest.importorskip("gcp_storage_emulator.server")

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_train.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "hope-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _serve_generations() -> None:
    """The emulator's object download omits the `x-goog-generation` header that real GCS
    sends, so tensorstore reads generation 0 and its conditional writes (OCDBT's manifest
    update) fail with "Malformed StorageGeneration". Adds the header (idempotent)."""
    from gcp_storage_emulator import server as srv
    from gcp_storage_emulator.handlers import objects

    original = getattr(objects.download, "original", objects.download)

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"],
                                       request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
        except Exception:  # not found: the original handler answers 404
            pass
        original(request, response, storage, *args, **kwargs)

    download.original = original
    objects.download = download          # what objects.get calls for ?alt=media
    for _, handlers in srv.HANDLERS:     # and the download routes
        for method, fn in list(handlers.items()):
            if getattr(fn, "original", fn) is original:
                handlers[method] = download


@pytest.fixture
def gcs(monkeypatch):
    """An in-memory GCS emulator with one bucket; the environment points gcsfs and tensorstore
    at it (also for the subprocesses, which inherit it)."""
    _serve_generations()
    port = _free_port()
    server = emulator.create_server("localhost", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://localhost:{port}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", url)
    monkeypatch.setenv("GOOGLE_AUTH_TOKEN_FOR_TESTING", "emulator")  # no metadata-server lookup
    import fsspec
    fsspec.filesystem("gs").clear_instance_cache()
    yield f"gs://{BUCKET}"
    fsspec.filesystem("gs").clear_instance_cache()
    server.stop()


def _remote_losses(workdir: str) -> dict[int, float]:
    from hope_jax.data import storage
    rows = [json.loads(x) for x in storage.read_text(f"{workdir}/metrics.jsonl").splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_train_kill_resume_on_a_gs_workdir(tmp_path, gcs):
    from hope_jax.cli_base import has_checkpoints
    from hope_jax.data import storage
    from hope_jax.train.checkpoint import Checkpointer
    from hope_jax.train.loop import load_for_inference, train

    workdir = f"{gcs}/runs/tiny"
    config = tiny_config(str(tmp_path), steps=100_000, checkpoint_every=2, keep_checkpoints=2)
    path = str(tmp_path / "config.json")
    with open(path, "w") as f:
        json.dump(config_to_json(config), f)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, RUNNER, path, workdir], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None and not has_checkpoints(workdir):
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0]
    time.sleep(1.0)                      # mid-run, likely mid-save: the hard case
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    for cwd in (ROOT, os.getcwd()):      # the old bug: abspath("gs://b/r") = <cwd>/gs:/b/r
        assert not os.path.exists(os.path.join(cwd, "gs:"))
    assert storage.exists(f"{workdir}/tokenizer/tokenizer.json")

    saved = Checkpointer(workdir).steps()
    assert saved, "no committed step reached the bucket"
    last = saved[0]
    resumed = config.copy_and_resolve_references()
    resumed.train.steps = last + 2
    result = train(resumed, workdir)
    assert result["step"] == last + 2 and result["stopped"] == "done"
    assert result["checkpoint_dir"] == f"{workdir}/checkpoints"
    assert Checkpointer(workdir).steps()[0] == last + 2
    for name in ("metrics.jsonl", "loss.png"):
        assert storage.exists(f"{workdir}/{name}"), name
    assert any(n.startswith("events") for n in storage.listdir(f"{workdir}/tb"))
    # a file a library writes itself (eval's probe plot): into a directory that does not exist
    # yet, uploaded whole to the bucket, renamed into place locally
    def write(path: str) -> None:
        with open(path, "w") as f:
            f.write("plot")
    for where in (f"{workdir}/eval/probe.png", str(tmp_path / "new" / "probe.png")):
        storage.write_with(where, write)
        assert storage.read_text(where) == "plot"
    assert os.listdir(tmp_path / "new") == ["probe.png"]

    # the same steps in one local run: the losses agree bit for bit across the kill
    local = str(tmp_path / "local")
    train(resumed, local)
    with open(os.path.join(local, "metrics.jsonl")) as f:
        want = {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}
    got = _remote_losses(workdir)
    for s in range(1, last + 3):
        assert got[s] == want[s], (s, got[s], want[s])

    model, tok, _ = load_for_inference(workdir)   # parameters and tokenizer from the bucket
    logits = model(np.asarray([tok.encode("it was")], np.int32))
    assert np.isfinite(np.asarray(logits)).all()
