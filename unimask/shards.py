"""Tar shards as a dataset root: WebDataset shards plus one `wids` index file, read by position.

A folder of a million small files starves a cluster's readers (one metadata lookup and one small
read per sample on a network file system); the same files packed into a few hundred tar shards
are read in large sequential pieces. tools/make_shards.py writes them with webdataset's
ShardWriter: sample k of the packed split becomes the tar members `<k>.<ext>` (the file's bytes,
untouched) and `<k>.json` (its label and name), and the index file is a `wids` shard index
(`{"wids_version": 1, "shardlist": [{"url", "nsamples", "filesize"}]}`) with one extra section,
`unimask`: the split, and each sample's name and label in the packed order.

Why the names and labels sit in the index: listing a root must not open the shards (a rank or a
worker opens only the shards it reads), yet the step sampler, the probes and the resume
fingerprint need the sample list and labels up front, as a folder's listing gives them.

A sample from shards is a `ShardMember`: a str (its index file and name, so extensions, error
messages and the resume fingerprint treat it as a path) that `readable()` turns into a file
object over the member's bytes. Every decoder opens its input through `readable()`, so the same
bytes reach the same decoder from a folder or a shard, and batches match bit for bit. The shards
are opened lazily, in the process that reads (a DataLoader worker), through wids'
ShardListDataset: random access by position, so the sampler's seed-per-step order and the exact
data-position resume work unchanged. Nothing read from a shard is unpickled or decoded by wids
(no transformations): the json is parsed here, the file bytes go to the modality's decoder.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from typing import Callable, List, Optional
from urllib.parse import urlparse

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

            index = load_remote_dsdesc_raw(path)
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
    if not isinstance(ours, dict) or not isinstance(ours.get("names"), list) or not isinstance(ours.get("labels"), list):
        return "no 'unimask' section with the samples' 'names' and 'labels'"
    if len(ours["names"]) != total or len(ours["labels"]) != total:
        return f"the shards hold {total} samples, the index names {len(ours['names'])} and labels {len(ours['labels'])}"
    return None


def shard_urls(path: str, index: dict) -> List[dict]:
    """The shard list with each url resolved against the index file's folder (wids' own rule)."""
    from wids.wids_specs import urldir, urlmerge

    base = urldir(os.path.abspath(path) if not is_remote(path) and not path.startswith("file:") else path)
    return [{"url": urlmerge(base, shard["url"]), "nsamples": shard["nsamples"]} for shard in index["shardlist"]]


class ShardReader:
    """The shards of one index, opened on first read in the reading process (a worker): the
    listing process pickles it to workers unopened, and a worker opens only the shards its
    samples sit in (wids keeps the last few open)."""

    def __init__(self, path: str, shards: List[dict]):
        self.path, self.shards, self._dataset, self._pid = path, shards, None, None

    def __getstate__(self):
        return dict(self.__dict__, _dataset=None, _pid=None)

    def dataset(self):
        if self._dataset is None or self._pid != os.getpid():
            from wids import ShardListDataset

            with contextlib.redirect_stderr(io.StringIO()):  # wids prints its cache folder on every start
                self._dataset = ShardListDataset(self.shards, localname=local_path, transformations=[])
            self._pid = os.getpid()
        return self._dataset

    def read(self, position: int, member: str = "file") -> bytes:
        """The bytes of sample `position`: its file (the one member that is not the json), or
        member='json' its json."""
        sample = self.dataset()[position]
        members = [k for k in sample if not k.startswith("__") and k != ".json"]
        if len(members) != 1 or ".json" not in sample:
            raise ValueError(f"shard {sample.get('__shard__')}: sample {sample.get('__key__')} has members "
                             f"{sorted(k for k in sample if not k.startswith('__'))}, expected one file and a .json")
        return sample[".json" if member == "json" else members[0]].getvalue()


class ShardMember(str):
    """One sample in shards, named `<index file>[<position>] <original name>` (so it ends with the
    file's extension, as a path would); `readable(member)` gives its bytes."""

    reader: ShardReader
    position: int
    name: str

    def __new__(cls, reader: ShardReader, position: int, name: str):
        member = super().__new__(cls, f"{reader.path}[{position}] {name}")
        member.reader, member.position, member.name = reader, position, name
        return member

    def __reduce__(self):
        return ShardMember, (self.reader, self.position, self.name)


def readable(path):
    """What a decoder opens: the path itself for a file, a fresh file object over the bytes of a
    shard member (each call its own, so decoders that open twice start from the start)."""
    if isinstance(path, ShardMember):
        return io.BytesIO(path.reader.read(path.position))
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
        record = json.loads(path.reader.read(path.position, "json"))
    except ValueError as err:
        raise ValueError(f"{path}: its .json is not JSON ({err})") from None
    return (record.get("meta") or {}) if isinstance(record, dict) else {}


def folder_of(path) -> str:
    """The folder whose files sit beside a sample (class lists, statistics): a file's own folder,
    the index file's folder for a shard member (where tools/make_shards.py copies them)."""
    return os.path.dirname(os.path.abspath(local_path(path.reader.path) if isinstance(path, ShardMember) else path))


def open_sample(path, mode: str = "rb", **text_options):
    """open(path, mode) for a file; for a shard member, a file object over its bytes (text modes
    decoded with `text_options`, as open's encoding / errors)."""
    if not isinstance(path, ShardMember):
        return open(path, mode, **text_options)
    stream = readable(path)
    return stream if "b" in mode else io.TextIOWrapper(stream, **text_options)


def list_index(path: str) -> List[tuple]:
    """An index file -> [(ShardMember, label|None)]. Local shards must exist (one stat each;
    none is opened)."""
    path = os.path.expanduser(str(path))
    index = load_index(path)
    shards = shard_urls(path, index)
    for shard in shards:
        if not is_remote(shard["url"]) and not os.path.isfile(local_path(shard["url"])):
            raise FileNotFoundError(f"{path}: shard {shard['url']} does not exist")
    reader = ShardReader(path, shards)
    ours = index["unimask"]
    return [(ShardMember(reader, i, name), label) for i, (name, label) in enumerate(zip(ours["names"], ours["labels"]))]


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
             "unimask": {"split": split, "source": source, "names": names, "labels": labels}}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    return index
