"""Downloads against a local HTTP server on 127.0.0.1: good file, corrupted file, dropped connection."""

import hashlib
import http.server
import threading
from typing import ClassVar

import pytest

from mgcnn.data import DownloadError, download_dataset, download_file, load_dataset
from tests.helpers import write_cifar

GOOD = bytes(range(256)) * 4096  # 1 MiB
GOOD_MD5 = hashlib.md5(GOOD).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        if self.path == "/dropped.bin":
            # Promise the whole file, send a third of it, then cut the connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    Handler.files = {"/good.bin": GOOD, "/corrupted.bin": GOOD[:-1] + b"\x00"}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_good_download_is_verified_and_written(server, tmp_path):
    dest = download_file(f"{server}/good.bin", tmp_path / "f.bin", GOOD_MD5)
    assert dest.read_bytes() == GOOD
    assert _leftovers(tmp_path) == ["f.bin"]


def test_corrupted_download_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="MD5 .* differs from the official"):
        download_file(f"{server}/corrupted.bin", tmp_path / "f.bin", GOOD_MD5)
    assert _leftovers(tmp_path) == []


def test_dropped_connection_leaves_nothing_and_keeps_an_old_file(server, tmp_path):
    with pytest.raises(DownloadError, match="dropped.bin"):
        download_file(f"{server}/dropped.bin", tmp_path / "f.bin", GOOD_MD5)
    assert _leftovers(tmp_path) == []
    (tmp_path / "f.bin").write_bytes(b"previous")
    with pytest.raises(DownloadError):
        download_file(f"{server}/dropped.bin", tmp_path / "f.bin", None)
    assert (tmp_path / "f.bin").read_bytes() == b"previous"


def test_missing_remote_file(server, tmp_path):
    with pytest.raises(DownloadError, match="404"):
        download_file(f"{server}/nope.bin", tmp_path / "f.bin", None)


def test_download_dataset_from_a_mirror_then_load(server, tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_cifar(src, monkeypatch=monkeypatch)  # registry now carries this archive's checksum
    Handler.files["/cifar-10-python.tar.gz"] = (src / "cifar10" / "cifar-10-python.tar.gz").read_bytes()
    folder = download_dataset("cifar10", tmp_path / "root", base_url=server)
    assert _leftovers(folder) == ["cifar-10-python.tar.gz"]
    assert len(load_dataset("cifar10", tmp_path / "root").train_labels) == 60  # 5 batches of 12
    # A second call keeps the verified file and downloads nothing.
    Handler.files.clear()
    download_dataset("cifar10", tmp_path / "root", base_url=server)
