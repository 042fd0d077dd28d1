"""Content-addressed artifact store over S3 (boto3): artifacts go up once and come down verified.

    store = ArtifactStore("my-bucket")                                  # AWS: env vars / AWS_PROFILE
    store = ArtifactStore.from_endpoint(S3Endpoint.load(state_dir), "greenpipe")  # the loopback stack
    ref = store.put_file("artifacts/unet.onnx")        # uploads only if the bucket lacks that content
    store.get_file(ref, "/srv/run/unet.onnx")          # verified sha256 and size; a good local copy is reused
    store.put_json(store.result_key("job-42", "metrics.json"), {...})

Layout in the bucket, below ``prefix``::

    <prefix>/cas/sha256/<ab>/<sha256>   every file and every directory manifest, named by its content
    <prefix>/results/<job-id>/...       per-job JSON (put_json / get_json)
    <prefix>/hosts/<host>/...           what device host <host> writes back: the same two trees below it
                                        (``host_area``); a host may write there and nowhere else

Credentials come from boto3's normal chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or
``profile=``, instance roles); the loopback stack's random keys come from its ``s3.json`` via
``from_endpoint``. Nothing secret is ever a parameter stored in the repository.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlparse

import boto3
import botocore.exceptions
from boto3.exceptions import RetriesExceededError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    CredentialRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from greenpipe.errors import GreenpipeError
from greenpipe.io import jsonable

if TYPE_CHECKING:
    from greenpipe.farm.s3server import S3Endpoint

MiB = 1024 * 1024
MANIFEST_FORMAT = "greenpipe.dir/1"
HOSTS_DIR = "hosts"  # <prefix>/hosts/<host>/: one device host's writable area
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class StoreError(GreenpipeError):
    """The artifact store could not do what was asked (unreachable, no credentials, no bucket, ...)."""


class TooLarge(StoreError):
    """An object is larger than its reference, its manifest or a limit allows; it was not downloaded whole."""


class ArtifactNotFound(StoreError):
    """The object a reference or key names is not in the bucket."""


class LocalWriteError(StoreError):
    """A download could not be written where it was going (disk full, read-only, ...); nothing of it kept."""


def _local_write_error(dest: Path, what: str, e: OSError) -> LocalWriteError:
    return LocalWriteError(
        f"Cannot write {what} into {dest.parent}: {e.strerror or e} (errno {e.errno}). The partial download "
        f"was discarded and {dest.name} is as it was. Free space in (or fix the permissions of) "
        f"{dest.parent} and retry."
    )


class ChecksumMismatch(StoreError):
    """A downloaded object's bytes differ from the sha256/size its reference promises."""

    def __init__(
        self, bucket: str, key: str, expected: str, actual: str, expected_size: int, actual_size: int
    ) -> None:
        self.bucket, self.key = bucket, key
        self.expected, self.actual = expected, actual
        self.expected_size, self.actual_size = expected_size, actual_size
        super().__init__(
            f"s3://{bucket}/{key} is corrupt: expected sha256 {expected} ({expected_size} bytes), "
            f"downloaded sha256 {actual} ({actual_size} bytes). The download was discarded. The stored "
            "object was damaged or overwritten: upload the original again with put_file(path, force=True) "
            "(or re-run the stage that produced it) and retry."
        )


@dataclass(frozen=True)
class ArtifactRef:
    """Where an artifact lives and what its bytes must hash to; what stages record and workers receive."""

    key: str  # full object key in the bucket, so the ref stands on its own
    sha256: str  # hex digest of the object's bytes
    size: int  # bytes
    kind: str = "file"  # "file", or "dir" when the object is a directory manifest

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArtifactRef:
        """Rebuild a ref from ``to_dict()`` output, checking each field."""
        try:
            ref = cls(str(d["key"]), str(d["sha256"]), int(d["size"]), str(d.get("kind", "file")))
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(
                f"Not an artifact reference: {d!r} ({e!r}); expected a dict with key, sha256, size and kind "
                "as written by ArtifactRef.to_dict()."
            ) from None
        if not _SHA256_RE.fullmatch(ref.sha256) or ref.size < 0 or ref.kind not in ("file", "dir"):
            raise StoreError(
                f"Artifact reference {d!r} is malformed: sha256 must be 64 lowercase hex digits, size >= 0 "
                "and kind 'file' or 'dir'."
            )
        return ref


@dataclass
class TransferStats:
    """Counts of what this store object has moved, for dedup checks and reports."""

    uploaded: int = 0  # objects written
    skipped: int = 0  # puts that found the content already stored
    downloaded: int = 0  # objects fetched and verified
    reused: int = 0  # gets satisfied by a verified local file, no download
    bytes_up: int = 0
    bytes_down: int = 0


def sha256_file(path: str | Path) -> tuple[str, int]:
    """Return ``(sha256 hex digest, size in bytes)`` of a file, read in chunks."""
    with open(path, "rb") as f:
        return _digest(f)


def _digest(f: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(MiB):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _check_relative_key(key: str) -> str:
    # serve s3 (and MinIO) reject keys with ".", ".." or empty segments; say so before the round trip.
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(
            f"Object key {key!r} is not a clean relative path: use segments separated by single '/', "
            "without '.', '..', or leading/trailing '/' (e.g. 'results/job-42/metrics.json')."
        )
    return key


class ArtifactStore:
    """A content-addressed store in ``bucket`` below ``prefix``.

    ``endpoint_url`` points at a non-AWS S3 (the loopback stack, MinIO, ...); None uses boto3's default
    (AWS, or AWS_ENDPOINT_URL_S3). ``profile`` names an AWS profile; ``region`` the signing region.
    Transfers above ``multipart_threshold`` bytes go in parts of ``multipart_chunksize`` bytes (S3 needs
    >= 5 MiB per part; boto3 raises smaller values), ``max_concurrency`` at a time. ``connect_timeout_s``
    and ``read_timeout_s`` (seconds) and ``max_attempts`` (tries per request, the first included) bound
    how long an unreachable endpoint takes to report. ``progress`` shows a tqdm bar per transfer on
    stderr. ``session`` overrides the boto3 session (``from_endpoint`` passes one holding the loopback
    stack's keys).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "greenpipe",
        endpoint_url: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        *,
        session: boto3.Session | None = None,
        multipart_threshold: int = 64 * MiB,
        multipart_chunksize: int = 16 * MiB,
        max_concurrency: int = 4,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
        progress: bool = False,
    ) -> None:
        if not bucket:
            raise StoreError("ArtifactStore needs a bucket name: pass the S3 bucket that holds the artifacts.")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.progress = progress
        self.stats = TransferStats()
        try:
            session = session or boto3.Session(profile_name=profile, region_name=region)
        except ProfileNotFound:
            raise StoreError(
                f"AWS profile {profile!r} is not defined in ~/.aws/config or ~/.aws/credentials "
                "(or AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE): add it, or pass profile=None to use "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."
            ) from None
        loopback = bool(endpoint_url) and urlparse(endpoint_url).hostname in _LOOPBACK_HOSTS
        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # total_max_attempts counts the first try; botocore's "max_attempts" would count retries only.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            # Path-style: a loopback or on-prem endpoint has no per-bucket DNS names.
            s3={"addressing_style": "path"} if endpoint_url else None,
            # An HTTP(S)_PROXY set for the internet must not swallow traffic to 127.0.0.1.
            proxies={} if loopback else None,
            # Every download is checked against its sha256 here. botocore's own response check compares a
            # ranged part with the whole object's CRC when a server (rclone serve s3) sends that for a
            # range, failing every object over multipart_threshold that went up in one PUT.
            response_checksum_validation="when_required",
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.endpoint_url: str = self.client.meta.endpoint_url
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )

    @classmethod
    def from_endpoint(
        cls, endpoint: S3Endpoint, bucket: str, prefix: str = "greenpipe", **kwargs: Any
    ) -> ArtifactStore:
        """A store on a loopback S3 server, using the key pair it generated at start-up."""
        session = boto3.Session(
            aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            region_name=endpoint.region,
        )
        return cls(
            bucket, prefix, endpoint_url=endpoint.url, region=endpoint.region, session=session, **kwargs
        )

    def __repr__(self) -> str:
        return f"ArtifactStore(s3://{self.bucket}/{self.prefix} at {self.endpoint_url})"

    # -- keys ------------------------------------------------------------------------------------

    def key(self, relative: str) -> str:
        """Full object key for a key relative to the store's prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def result_key(self, job_id: str, name: str) -> str:
        """Key (relative to the prefix) of a per-job result file: ``results/<job_id>/<name>``."""
        return _check_relative_key(f"results/{job_id}/{name}")

    def host_area(self, host: str) -> ArtifactStore:
        """This store below ``hosts/<host>/``: where device host ``host`` writes its outputs and results
        (same client, same transfer counts). The farm lets a host write nowhere else."""
        if not host or "/" in host or host in (".", ".."):
            raise StoreError(f"Host name {host!r} cannot name a store folder: use a name without '/'.")
        area = copy.copy(self)
        area.prefix = self.key(_check_relative_key(f"{HOSTS_DIR}/{host}"))
        return area

    def cas_key(self, sha256: str) -> str:
        """Full object key under which content with this sha256 is stored."""
        return self.key(f"cas/sha256/{sha256[:2]}/{sha256}")

    # -- buckets ---------------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists already."""
        with self._errors("check bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as e:
                if _code(e) not in ("404", "NoSuchBucket"):
                    raise
        region = self.client.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":  # AWS refuses an explicit us-east-1 constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with self._errors("create bucket"):
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as e:
                if _code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                # Created meanwhile by another process of ours (fine), or the name belongs to another
                # AWS account, which head_bucket then reports as 403.
                self.client.head_bucket(Bucket=self.bucket)

    # -- files and directories -------------------------------------------------------------------

    def put_file(self, path: str | Path, *, force: bool = False, progress: bool | None = None) -> ArtifactRef:
        """Store a file by content; uploads only if the bucket lacks it (or ``force``)."""
        path = Path(path)
        if not path.is_file():
            what = "a directory: use put_dir" if path.is_dir() else "missing"
            raise StoreError(f"Cannot upload {path}: it is {what}.")
        before = path.stat()
        sha, size = sha256_file(path)
        ref = ArtifactRef(self.cas_key(sha), sha, size)
        if not force and self._already_stored(ref):
            self.stats.skipped += 1
            return ref
        with (
            self._errors(f"upload {path}", ref.key),
            self._progress_cb(f"put {path.name}", size, progress) as cb,
        ):
            self.client.upload_file(
                str(path),
                self.bucket,
                ref.key,
                ExtraArgs=self._put_args(sha),
                Config=self._transfer,
                Callback=cb,
            )
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            # The stored bytes may not be the ones hashed; never leave such an object under a CAS name.
            with self._errors("delete a torn upload", ref.key):
                self.client.delete_object(Bucket=self.bucket, Key=ref.key)
            raise StoreError(
                f"{path} changed while it was being uploaded: upload it again once it is complete."
            )
        self.stats.uploaded += 1
        self.stats.bytes_up += size
        return ref

    def put_bytes(self, data: bytes, *, force: bool = False) -> ArtifactRef:
        """Store a small in-memory blob by content (a manifest, a config)."""
        sha = hashlib.sha256(data).hexdigest()
        ref = ArtifactRef(self.cas_key(sha), sha, len(data))
        if not force and self._already_stored(ref):
            self.stats.skipped += 1
            return ref
        with self._errors("upload bytes", ref.key):
            self.client.put_object(Bucket=self.bucket, Key=ref.key, Body=data, **self._put_args(sha))
        self.stats.uploaded += 1
        self.stats.bytes_up += len(data)
        return ref

    def put_dir(self, path: str | Path, *, progress: bool | None = None) -> ArtifactRef:
        """Store every file below a directory by content, then a manifest (relative path -> sha256, size).

        The returned ref names the manifest (``kind="dir"``); identical trees give identical refs.
        Empty directories are not recorded; symlinks to files are stored as the files they point to.
        """
        root = Path(path)
        if not root.is_dir():
            raise StoreError(
                f"Cannot upload {root} as a directory: it is {'a file' if root.exists() else 'missing'}."
            )
        files: dict[str, dict[str, Any]] = {}
        for p in sorted(root.rglob("*")):
            if p.is_file():
                ref = self.put_file(p, progress=progress)
                files[p.relative_to(root).as_posix()] = {"sha256": ref.sha256, "size": ref.size}
        manifest = {"format": MANIFEST_FORMAT, "files": files}
        # Canonical bytes, so that the same tree always hashes to the same manifest key.
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        return replace(self.put_bytes(data), kind="dir")

    def get_file(
        self, ref: ArtifactRef | dict[str, Any], dest: str | Path, *, progress: bool | None = None
    ) -> Path:
        """Fetch an artifact to ``dest`` (a file path) and verify it; returns ``dest``.

        A file already at ``dest`` with the right size and sha256 is kept without downloading. An object
        whose stored size differs from the reference's raises TooLarge / ChecksumMismatch before a byte is
        downloaded, and the download stops as soon as more bytes arrive than the reference promises. It
        goes to a temporary file beside ``dest`` and replaces it only once verified; a mismatch raises
        ChecksumMismatch and leaves ``dest`` as it was.
        """
        ref = _as_ref(ref)
        if ref.kind != "file":
            raise StoreError(f"{ref.key} is a directory manifest: fetch it with get_dir, not get_file.")
        dest = Path(dest)
        if dest.is_dir():
            raise StoreError(
                f"Cannot write {ref.key} to {dest}: it is a directory; give get_file a file path."
            )
        if dest.is_file() and dest.stat().st_size == ref.size and sha256_file(dest)[0] == ref.sha256:
            self.stats.reused += 1
            return dest
        what = f"s3://{self.bucket}/{ref.key}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _local_write_error(dest, what, e) from None
        self._check_stored_size(ref)
        try:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as e:
            raise _local_write_error(dest, what, e) from None
        try:
            with os.fdopen(fd, "w+b") as f:
                with (
                    self._errors("download", ref.key),
                    self._progress_cb(f"get {dest.name}", ref.size, progress) as cb,
                ):
                    capped = _CappedWriter(f, ref.size, what, dest)
                    self.client.download_fileobj(self.bucket, ref.key, capped, Config=self._transfer, Callback=cb)
                f.seek(0)
                sha, size = _digest(f)
            if (sha, size) != (ref.sha256, ref.size):
                raise ChecksumMismatch(self.bucket, ref.key, ref.sha256, sha, ref.size, size)
            os.chmod(tmp, 0o644)  # mkstemp made it 0600; artifacts are ordinary readable files
            os.replace(tmp, dest)
        except OSError as e:  # closing (flushing) the file or renaming it
            Path(tmp).unlink(missing_ok=True)
            raise _local_write_error(dest, what, e) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.stats.downloaded += 1
        self.stats.bytes_down += size
        return dest

    def get_dir(
        self, ref: ArtifactRef | dict[str, Any], dest: str | Path, *, progress: bool | None = None,
        max_total_bytes: int | None = None,
    ) -> Path:  # fmt: skip
        """Fetch a directory stored with put_dir into ``dest``; returns ``dest``.

        Every file is verified as in get_file and reused when already right. Files in ``dest`` that the
        manifest does not list are left alone. A manifest whose files add up to more than
        ``max_total_bytes`` raises TooLarge before any file is downloaded.
        """
        ref = _as_ref(ref)
        if ref.kind != "dir":
            raise StoreError(f"{ref.key} is a single file: fetch it with get_file, not get_dir.")
        data = self._get_bytes(ref.key, max_bytes=ref.size)
        sha = hashlib.sha256(data).hexdigest()
        if (sha, len(data)) != (ref.sha256, ref.size):
            raise ChecksumMismatch(self.bucket, ref.key, ref.sha256, sha, ref.size, len(data))
        manifest = json.loads(data)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise StoreError(
                f"{ref.key} is a directory manifest of format {manifest.get('format')!r}; this greenpipe "
                f"reads {MANIFEST_FORMAT!r}. Upload the directory again with this version."
            )
        total = sum(int(entry["size"]) for entry in manifest["files"].values())
        if max_total_bytes is not None and total > max_total_bytes:
            raise TooLarge(
                f"s3://{self.bucket}/{ref.key} lists {len(manifest['files'])} files of {total} bytes in all, "
                f"over the limit of {max_total_bytes} bytes; nothing was downloaded."
            )
        # Files sit beside the manifest in the same CAS tree, whatever this store's own prefix is.
        cas_root = ref.key.rsplit("/", 2)[0]
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, entry in manifest["files"].items():
            _check_relative_key(rel)  # a manifest must not write outside dest
            file_sha = entry["sha256"]
            file_ref = ArtifactRef(f"{cas_root}/{file_sha[:2]}/{file_sha}", file_sha, int(entry["size"]))
            self.get_file(file_ref, dest / rel, progress=progress)
        return dest

    # -- results ---------------------------------------------------------------------------------

    def put_json(self, key: str, obj: Any) -> str:
        """Write ``obj`` as JSON at ``key`` (relative to the prefix, e.g. ``results/<job-id>/metrics.json``),
        overwriting what was there; returns the full object key."""
        full = self.key(_check_relative_key(key))
        body = (json.dumps(jsonable(obj), indent=2) + "\n").encode()
        with self._errors("write JSON", full):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=body, ContentType="application/json")
        return full

    def get_json(self, key: str, max_bytes: int | None = None) -> Any:
        """Read the JSON at ``key`` (relative to the prefix); TooLarge past ``max_bytes`` bytes."""
        full = self.key(_check_relative_key(key))
        data = self._get_bytes(full, max_bytes)
        try:
            return json.loads(data)
        except ValueError as e:
            raise StoreError(
                f"s3://{self.bucket}/{full} is not valid JSON ({e}): whoever wrote it must rewrite it."
            ) from None

    def list(self, prefix: str = "") -> list[str]:
        """Keys below ``prefix`` (both relative to the store's prefix), sorted."""
        full = self.key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        with self._errors("list", full):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            ):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    # -- internals -------------------------------------------------------------------------------

    def _put_args(self, sha: str) -> dict[str, Any]:
        # serve s3 keeps user metadata in memory only, so the key (not this) is the source of truth.
        return {"Metadata": {"sha256": sha}, "ContentType": "application/octet-stream"}

    def _already_stored(self, ref: ArtifactRef) -> bool:
        with self._errors("check", ref.key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=ref.key)
            except ClientError as e:
                if _code(e) in ("404", "NoSuchKey"):
                    return False
                raise
        meta = {k.lower(): v for k, v in head.get("Metadata", {}).items()}
        # A size or recorded hash that disagrees means a damaged object: upload again to repair it.
        return head["ContentLength"] == ref.size and meta.get("sha256", ref.sha256) == ref.sha256

    def _get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        with self._errors("download", key):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            # Read one byte past the limit, never the whole of an oversize object.
            data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
            body.close()
        if max_bytes is not None and len(data) > max_bytes:
            raise TooLarge(
                f"s3://{self.bucket}/{key} is larger than the {max_bytes} bytes allowed; it was not read whole."
            )
        self.stats.bytes_down += len(data)
        return data

    def _check_stored_size(self, ref: ArtifactRef) -> None:
        """TooLarge / ChecksumMismatch before downloading when the stored object is not ``ref.size`` bytes."""
        with self._errors("check", ref.key):
            stored = int(self.client.head_object(Bucket=self.bucket, Key=ref.key)["ContentLength"])
        if stored > ref.size:
            raise TooLarge(
                f"s3://{self.bucket}/{ref.key} is {stored} bytes, but its reference (manifest) says "
                f"{ref.size}; nothing was downloaded. Whoever wrote the manifest or the object lied or "
                "damaged it: put the original again and retry."
            )
        if stored != ref.size:
            raise ChecksumMismatch(self.bucket, ref.key, ref.sha256, "(not downloaded)", ref.size, stored)

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn boto errors into StoreErrors that name the endpoint, bucket or key and the fix."""
        try:
            yield
        except GreenpipeError:
            raise
        except Exception as e:
            err = self._translate(e, action, key)
            if err is None:
                raise
            raise err from e

    def _translate(self, exc: BaseException, action: str, key: str | None) -> StoreError | None:
        url, where = self.endpoint_url, f"s3://{self.bucket}/{key or ''}"
        for e in _chain(exc):
            if isinstance(e, (botocore.exceptions.ConnectionError, ReadTimeoutError, ConnectionClosedError)):
                return StoreError(
                    f"Cannot reach the S3 endpoint {url} to {action} {where} ({type(e).__name__}). "
                    "If it is the loopback stack, start it (greenpipe.farm.s3server.LocalS3); otherwise "
                    "check endpoint_url / AWS_ENDPOINT_URL_S3 and the network."
                )
            if isinstance(e, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
                return StoreError(
                    f"No usable AWS credentials to {action} {where} at {url} ({e}). Set AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (or profile=) naming a profile in "
                    "~/.aws/credentials; for the loopback stack use "
                    "ArtifactStore.from_endpoint(S3Endpoint.load(state_dir), bucket)."
                )
            if isinstance(e, ClientError):
                code = _code(e)
                if code == "NoSuchBucket" or (code in ("404", "NoSuchKey") and not self._bucket_exists()):
                    return StoreError(
                        f"Bucket {self.bucket!r} does not exist at {url} (while trying to {action} {where}). "
                        f"Create it with ArtifactStore.ensure_bucket() (or `aws s3 mb s3://{self.bucket}`), "
                        "or fix the bucket name."
                    )
                if code in ("404", "NoSuchKey"):
                    return ArtifactNotFound(
                        f"{where} is not in the store at {url}: it was never uploaded or has been deleted. "
                        "Re-run the stage that uploads it, or check the reference / key."
                    )
                if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                    return StoreError(
                        f"The S3 endpoint {url} refused to let us {action} {where} ({code}). Check "
                        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile and its permissions; the "
                        "loopback stack makes new keys at each start, so reload them with S3Endpoint.load()."
                    )
                msg = e.response.get("Error", {}).get("Message", "")
                return StoreError(
                    f"The S3 endpoint {url} failed to {action} {where}: {code} {msg}. "
                    "Retry; if it persists, check the server's log."
                )
        return None

    def _bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            return _code(e) not in ("404", "NoSuchBucket")
        except Exception:  # unreachable and the like: let the original error speak
            return True
        return True

    @contextmanager
    def _progress_cb(
        self, desc: str, total: int, enabled: bool | None
    ) -> Iterator[Callable[[int], None] | None]:
        if not (self.progress if enabled is None else enabled):
            yield None
            return
        from tqdm import tqdm

        lock = threading.Lock()  # boto3 reports progress from its worker threads
        with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False) as bar:

            def update(n: int) -> None:
                with lock:
                    bar.update(n)

            yield update


class _CappedWriter:
    """A file object for download_fileobj that refuses bytes past ``limit`` (a lying size, a swapped object)."""

    def __init__(self, f: IO[bytes], limit: int, what: str, dest: Path) -> None:
        self._f, self._limit, self._what, self._dest, self._n = f, limit, what, dest, 0
        self._lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self._lock:
            self._n += len(data)
            if self._n > self._limit:
                raise TooLarge(f"{self._what} sent more than the {self._limit} bytes its reference gives; "
                               "the download was stopped and discarded.")  # fmt: skip
        try:
            return self._f.write(data)
        except OSError as e:  # a full disk, a file size limit: say where, not a bare errno from s3transfer
            raise _local_write_error(self._dest, self._what, e) from None

    def seek(self, *args: Any) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()


def _as_ref(ref: ArtifactRef | dict[str, Any]) -> ArtifactRef:
    return ref if isinstance(ref, ArtifactRef) else ArtifactRef.from_dict(ref)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes, and what boto3's transfer wrappers hide (S3UploadFailedError keeps
    the ClientError only as __context__; RetriesExceededError as .last_exception)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]
        if isinstance(e, RetriesExceededError):
            todo.append(getattr(e, "last_exception", None))
