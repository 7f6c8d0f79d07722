"""Tar shards as a dataset root: WebDataset shards plus one `wids` index file, read by position.

A folder of a million small files starves a cluster's readers (one metadata lookup and one small
read per sample on a network file system); the same files packed into a few hundred tar shards
are read in large sequential pieces. tools/make_shards.py writes them with webdataset's
ShardWriter: sample k of the packed split becomes the tar members `<k>.<ext>` (the file's bytes,
untouched) and `<k>.json` (its label and name), and the index file is a `wids` shard index
(`{"wids_version": 1, "shardlist": [{"url", "nsamples", "filesize"}]}`) with one extra section,
`unimask`: the split, and each sample's name, label and place (the byte offsets and sizes of
its two members) in the packed order.

Why the names, labels and places sit in the index: listing a root must not open the shards (a
rank or a worker opens only the shards it reads), yet the step sampler, the probes and the
resume fingerprint need the sample list and labels up front, as a folder's listing gives them.

A sample from shards is a `ShardMember`: a str (its index file and name, so extensions, error
messages and the resume fingerprint treat it as a path) that `readable()` turns into a file
object over the member's bytes. Every decoder opens its input through `readable()`, so the same
bytes reach the same decoder from a folder or a shard, and batches match bit for bit. Samples
are read by position, at the byte offsets the index records (ShardReader says why not through
wids' ShardListDataset), in the process that reads (a DataLoader worker), which opens a shard
on first use: the sampler's seed-per-step order and the exact data-position resume work
unchanged. Nothing read from a shard is unpickled: the json is parsed here, the file bytes go
to the modality's decoder.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from collections import OrderedDict
from typing import Callable, List, Optional
from urllib.parse import urlparse

import numpy as np

INDEX_KIND = "wids-shard-index-v1"


def is_shard_index(root) -> bool:
    """A dataset root that names a shard index: a .json file (local or a URL)."""
    return isinstance(root, (str, os.PathLike)) and str(root).lower().endswith(".json")


def is_remote(url: str) -> bool:
    return url.startswith("pipe:") or urlparse(url).scheme not in ("", "file")


def local_path(url: str) -> str:
    """A local path or file:// URL -> its path (shards on a local or mounted disk are read in
    place); anything else (http(s)://, s3://, pipe:) -> the file wids downloads it to, in
    $WIDS_CACHE (default /tmp/_wids_cache)."""
    if not is_remote(url):
        return urlparse(url).path if url.startswith("file:") else url
    from wids.wids import DefaultLocalname

    return DefaultLocalname(os.environ.get("WIDS_CACHE", "/tmp/_wids_cache"))(url)


def load_index(path: str) -> dict:
    """Read and check an index file -> its dict; any fault is a ValueError naming the file."""
    path = os.path.expanduser(str(path))
    try:
        if is_remote(path):
            from wids.wids_specs import load_remote_dsdesc_raw

            try:
                index = load_remote_dsdesc_raw(path)
            except (AssertionError, OSError) as err:  # wids: a failed download command is an AssertionError
                raise ValueError(f"{path}: the shard index could not be fetched ({err})") from None
        else:
            with open(local_path(path)) as f:
                index = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"shard index {path!r} does not exist") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a shard index (not JSON: {err})") from None
    problem = index_problem(index)
    if problem:
        raise ValueError(f"{path}: not a shard index written by tools/make_shards.py ({problem})")
    return index


def index_problem(index) -> Optional[str]:
    """What is wrong with an index's layout, or None."""
    if not isinstance(index, dict) or index.get("wids_version") != 1:
        return "no 'wids_version': 1"
    shards = index.get("shardlist")
    if not isinstance(shards, list) or not shards:
        return "no 'shardlist' of shards"
    for shard in shards:
        if not (isinstance(shard, dict) and isinstance(shard.get("url"), str)
                and isinstance(shard.get("nsamples"), int) and shard["nsamples"] >= 0):
            return f"a shardlist entry without a 'url' and an integer 'nsamples': {str(shard)[:80]}"
    ours = index.get("unimask")
    total = sum(shard["nsamples"] for shard in shards)
    if not isinstance(ours, dict) or not all(isinstance(ours.get(k), list) for k in ("names", "labels", "members")):
        return "no 'unimask' section with the samples' 'names', 'labels' and 'members'"
    if not len(ours["names"]) == len(ours["labels"]) == len(ours["members"]) == total:
        return (f"the shards hold {total} samples, the index names {len(ours['names'])}, labels "
                f"{len(ours['labels'])} and places {len(ours['members'])}")
    if not all(isinstance(m, list) and len(m) == 4 and all(isinstance(v, int) and v >= 0 for v in m)
               for m in ours["members"]):
        return "a 'members' entry that is not [file offset, size, json offset, size]"
    if not all(isinstance(name, str) for name in ours["names"]):
        return "a name that is not a string"
    if not all(label is None or (isinstance(label, int) and not isinstance(label, bool)) for label in ours["labels"]):
        return "a label that is neither an integer nor null"
    return None


def shard_urls(path: str, index: dict) -> List[dict]:
    """The shard list with each relative url resolved against the index file's folder (wids' rule)."""
    from wids.wids_specs import urldir, urlmerge

    base = urldir(os.path.abspath(path) if not is_remote(path) and not path.startswith("file:") else path)

    def resolved(url: str) -> str:  # a URL with a scheme (pipe: commands above all) or an absolute path stays
        return url if is_remote(url) or url.startswith("file:") or os.path.isabs(url) else urlmerge(base, url)

    return [{"url": resolved(shard["url"]), "nsamples": shard["nsamples"]} for shard in index["shardlist"]]


class ShardReader:
    """The shards of one index, read at the byte offsets the index records for each sample.

    Why offsets and not wids' ShardListDataset, which scans a shard's tar headers when it opens
    it and keeps the last 10 open: the step sampler's global shuffle sends every worker to every
    shard in turn, so that cache misses on nearly every sample and each miss re-scans a whole
    shard (~20 us a sample in it: 40 ms for a shard of 2,300 samples, against a decode of ms;
    measured 4.5 ms a random read over 13 shards of 2,000 samples, 15 us in order). With the
    offsets from packing, a read is one pread (and an open on a miss: microseconds), whatever
    the order. The tar files and the index stay WebDataset's and wids' formats (any WebDataset
    or wids reader reads them), and remote shards are fetched by wids into its cache.

    Files are opened on first read in the reading process (a DataLoader worker): the listing
    process pickles the reader to workers unopened, and a worker opens only the shards its
    samples sit in, keeping the last OPEN_SHARDS open."""

    OPEN_SHARDS = 64

    def __init__(self, path: str, urls: List[str], counts: List[int], members):
        self.path, self.urls = path, urls
        self.first = np.cumsum([0] + list(counts[:-1]))  # [shards] position of each shard's first sample
        self.members = np.asarray(members, dtype=np.int64).reshape(-1, 4)  # [N, 4] file offset, size, json's
        self._files, self._pid = None, None

    def __getstate__(self):
        return dict(self.__dict__, _files=None, _pid=None)

    def descriptor(self, shard: int) -> int:
        """An open descriptor of shard `shard` in this process (opened, or fetched, on first use)."""
        if self._pid != os.getpid():  # a fresh worker: nothing of the parent's is used
            self._files, self._pid = OrderedDict(), os.getpid()
        fd = self._files.pop(shard, None)
        if fd is None:
            fd = os.open(fetched(self.urls[shard]), os.O_RDONLY)
            if len(self._files) >= self.OPEN_SHARDS:
                os.close(self._files.popitem(last=False)[1])
        self._files[shard] = fd
        return fd

    def read(self, position: int, member: str = "file") -> bytes:
        """The bytes of sample `position`: its file, or member='json' its json. The tar header
        before them must name the sample (a shard rewritten since the index is an error)."""
        shard = int(np.searchsorted(self.first, position, side="right")) - 1
        offset, size = (int(v) for v in self.members[position, (0, 1) if member == "file" else (2, 3)])
        fd = self.descriptor(shard)
        key = f"{position:09d}.".encode()
        if not os.pread(fd, len(key), offset - 512) == key:
            raise ValueError(f"{self.urls[shard]}: no sample {position} at byte {offset} where {self.path} "
                             "puts it (shards and index from different packings?)")
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise ValueError(f"{self.urls[shard]}: truncated: sample {position} needs bytes up to {offset + size}")
        return data


def fetched(url: str) -> str:
    """A shard's local path: itself on a local disk; a remote one downloaded by wids (its
    handlers: curl, the aws CLI, gsutil, a pipe: command) into $WIDS_CACHE, once."""
    local = local_path(url)
    if is_remote(url):
        from wids.wids_dl import download_and_open

        download_and_open(url, local).close()
    return local


READERS: dict = {}  # index file -> its ShardReader, which the members of that index read through


class ShardMember(str):
    """One sample in shards, named `<index file>[<position>] <original name>` (so it ends with the
    file's extension, as a path would); `readable(member)` gives its bytes.

    Only the name is stored (no attributes: a million members take ~200 MB as plain paths would,
    where attributes took 3.5x that): the reader is the one registered for the index file in
    READERS (the latest listing of it), the position is read back from the name."""

    __slots__ = ()

    def __new__(cls, reader: ShardReader, position: int, name: str):
        READERS[reader.path] = reader
        return super().__new__(cls, f"{reader.path}[{position}] {name}")

    def _split(self) -> tuple:
        """-> (reader, position, original name)."""
        for path, reader in READERS.items():
            if self.startswith(path + "["):
                end = self.index("] ", len(path))
                return reader, int(self[len(path) + 1:end]), self[end + 2:]
        raise KeyError(f"{self}: no shard index of that name was listed in this process")

    @property
    def reader(self) -> ShardReader:
        return self._split()[0]

    @property
    def position(self) -> int:
        return self._split()[1]

    def __reduce__(self):  # to a spawned worker: the reader travels (once a pickle) and registers there
        return ShardMember, self._split()


def readable(path):
    """What a decoder opens: the path itself for a file, a fresh file object over the bytes of a
    shard member (each call its own, so decoders that open twice start from the start)."""
    if isinstance(path, ShardMember):
        reader, position, _ = path._split()
        return io.BytesIO(reader.read(position))
    return path


def index_split(path: str) -> str:
    """The split an index file holds (tools/make_shards.py --split)."""
    return load_index(os.path.expanduser(str(path)))["unimask"].get("split", "train")


def packed_metadata(path) -> Optional[dict]:
    """The metadata packed beside a shard member (its dataset's file_metadata at packing: what a
    folder kept in files beside it); None for a file, whose folder the caller reads instead."""
    if not isinstance(path, ShardMember):
        return None
    try:
        reader, position, _ = path._split()
        record = json.loads(reader.read(position, "json"))
    except ValueError as err:
        raise ValueError(f"{path}: its .json is not JSON ({err})") from None
    return (record.get("meta") or {}) if isinstance(record, dict) else {}


def folder_of(path) -> str:
    """The folder whose files sit beside a sample (class lists, statistics): a file's own folder,
    the index file's folder for a shard member (where tools/make_shards.py copies them)."""
    return os.path.dirname(os.path.abspath(local_path(path.reader.path) if isinstance(path, ShardMember) else path))


def open_sample(path, mode: str = "rb", **decoding):
    """open(path, mode) for a file; for a shard member, a file object over its bytes (modes
    without 'b' decoded with `decoding`, as open's encoding / errors)."""
    if not isinstance(path, ShardMember):
        return open(path, mode, **decoding)
    stream = readable(path)
    return stream if "b" in mode else io.TextIOWrapper(stream, **decoding)


def list_index(path: str) -> List[tuple]:
    """An index file -> [(ShardMember, label|None)]. Local shards must exist (one stat each;
    none is opened)."""
    path = os.path.expanduser(str(path))
    index = load_index(path)
    shards = shard_urls(path, index)
    for shard in shards:
        if not is_remote(shard["url"]) and not os.path.isfile(local_path(shard["url"])):
            raise FileNotFoundError(f"{path}: shard {shard['url']} does not exist")
    # (a fresh index of 1M samples parses in ~1 s; its arrays take ~32 bytes a sample)
    reader = ShardReader(path, [shard["url"] for shard in shards], [shard["nsamples"] for shard in shards],
                         index["unimask"]["members"])
    ours = index["unimask"]
    return [(ShardMember(reader, i, name), label) for i, (name, label) in enumerate(zip(ours["names"], ours["labels"]))]


def member_offsets(shard: str) -> List[List[int]]:
    """[[file offset, size, json offset, size]] of each sample in a shard, in order (read once,
    at packing, with tarfile: what lets a reader go straight to a sample)."""
    import tarfile

    found = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            row, at = found.setdefault(key, [0, 0, 0, 0]), 2 if ext == "json" else 0
            row[at:at + 2] = [member.offset_data, member.size]
    return list(found.values())


def write_shards(items: List[tuple], out: str, shard_bytes: int, split: str, source: str,
                 metadata: Optional[Callable[[str], dict]] = None) -> dict:
    """Pack [(file path, label|None)] into `out`/shard-NNNNNN.tar and `out`/index.json -> the index.

    Sample k: `<k>.<ext>` holds the file's bytes as they are, `<k>.json` {"label", "name"} (name:
    the path relative to the common folder of all files) and "meta": metadata(path) where that
    gives any (what decoding needs from files beside it, packed_metadata reads it back). A shard is closed once it holds
    shard_bytes (webdataset's ShardWriter: it may pass the size by the last sample)."""
    from webdataset import ShardWriter

    os.makedirs(out, exist_ok=True)
    paths = [str(path) for path, _ in items]
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ""
    names, labels, counts = [], [], {}
    with contextlib.redirect_stdout(io.StringIO()):  # ShardWriter prints a line per shard
        # a fixed integer mtime: the same files give the same shards, and no per-member PAX header
        # (a float mtime takes one: 1 KB more a member)
        writer = ShardWriter(os.path.join(out, "shard-%06d.tar"), maxsize=shard_bytes, maxcount=10**9, mtime=0)
        for k, (path, label) in enumerate(items):
            name = os.path.relpath(os.path.abspath(path), common)
            ext = os.path.splitext(name)[1].lower().lstrip(".") or "bin"
            if ext == "json":  # the member name the metadata takes
                ext = "data.json"
            with open(path, "rb") as f:
                data = f.read()
            label = None if label is None else int(label)
            record = {"label": label, "name": name}
            meta = metadata(path) if metadata is not None else None
            if meta:
                record["meta"] = meta
            writer.write({"__key__": f"{k:09d}", ext: data, "json": json.dumps(record).encode()})
            counts[writer.fname] = counts.get(writer.fname, 0) + 1
            names.append(name)
            labels.append(label)
        writer.close()
    index = {"__kind__": INDEX_KIND, "wids_version": 1, "name": os.path.basename(os.path.abspath(out)),
             "shardlist": [{"url": os.path.basename(fname), "nsamples": n, "filesize": os.path.getsize(fname)}
                           for fname, n in counts.items()],
             "unimask": {"split": split, "source": source, "names": names, "labels": labels,
                         "members": [member for fname in counts for member in member_offsets(fname)]}}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    return index
