"""Real English text without a network, and a BERT WordPiece tokenizer, for text models.

Sentences come from the docstrings of Python's own standard library (written by
people, about many topics): modules are taken from a fixed list, their docstrings
and those of their public classes and functions are split into sentences, and
sentences that look like code or are too short or long are dropped. Deterministic
for one Python version (docstrings change between versions).

The tokenizer reads the ``vocab`` of a Hugging Face ``tokenizer.json`` (WordPiece)
or a ``vocab.txt`` and does what ``BertTokenizer(do_lower_case=True)`` does:
clean, lowercase, strip accents, split on whitespace and punctuation (CJK
characters alone), then greedy longest-match-first WordPiece with ``##``.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re
import unicodedata
import warnings
from pathlib import Path

import numpy as np

# Modules whose docstrings are prose (not tables or code); two disjoint halves make
# calibration and held-out text from different sources.
MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "codecs",
    "collections", "colorsys", "concurrent.futures", "configparser", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "dis", "doctest", "email", "enum", "filecmp",
    "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "http.client", "http.server", "imaplib", "inspect", "io",
    "ipaddress", "json", "locale", "logging", "lzma", "mailbox", "mimetypes", "multiprocessing",
    "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pdb", "pickle", "pickletools",
    "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats", "pydoc", "queue",
    "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string",
    "struct", "subprocess", "symtable", "sysconfig", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "tracemalloc", "turtle", "types", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zipimport", "zoneinfo",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE = re.compile(r"[=_{}\[\]<>|\\#@$`*]|::|\(\)|\.\w+\(|>>>|\b\w+\.\w+\.\w+")


def docstrings(module_name: str) -> list[str]:
    """The module's docstring and those of its public classes, functions and methods, by name."""
    try:
        module = importlib.import_module(module_name)
    except Exception:  # a module this Python lacks (platform-specific): no text from it
        return []
    found = [inspect.getdoc(module) or ""]
    with warnings.catch_warnings():  # deprecated aliases (typing.io) warn when touched
        warnings.simplefilter("ignore")
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found.append(inspect.getdoc(obj) or "")
                if inspect.isclass(obj):
                    found += [inspect.getdoc(m) or "" for n, m in sorted(vars(obj).items())
                              if not n.startswith("_") and inspect.isfunction(m)]
    return [d for d in found if d]


def sentences(doc: str, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Prose sentences of a docstring: paragraphs joined, split after . ! ?, code-like ones dropped."""
    result = []
    for paragraph in re.split(r"\n\s*\n", doc):
        lines = paragraph.strip().splitlines()
        if not lines or any(line.startswith((" ", ">>>", "-", "*", ":")) for line in lines):
            continue  # indented blocks, examples, lists, field lists
        for sentence in _SENTENCE_END.split(" ".join(line.strip() for line in lines)):
            words = sentence.split()
            if not (min_words <= len(words) <= max_words) or _CODE.search(sentence):
                continue
            if sentence[0].isupper() and sentence[-1] in ".!?" and sum(c.isalpha() for c in sentence) > 0.75 * len(sentence.replace(" ", "")):
                result.append(sentence)
    return result


def corpus(modules=MODULES) -> list[str]:
    """Unique sentences from the modules' docstrings, in module order."""
    seen, result = set(), []
    for name in modules:
        for doc in docstrings(name):
            for s in sentences(doc):
                if s not in seen:
                    seen.add(s)
                    result.append(s)
    return result


def splits(n_calib: int, n_heldout: int, seed: int = 0, more_calib: int = 0) -> tuple[list[str], list[str]]:
    """Calibration sentences from even-numbered modules, held-out ones from the others (drawn by seed);
    a sentence both halves contain (a shared docstring) is never in both splits. ``more_calib``
    calibration sentences are drawn after the held-out ones, so asking for more calibration data
    leaves the held-out set as it was."""
    rng = np.random.default_rng(seed)
    pools = corpus(MODULES[0::2]), corpus(MODULES[1::2])
    for pool, n in ((pools[0], n_calib + more_calib), (pools[1], n_heldout)):
        if len(pool) < n:
            raise SystemExit(f"text_data: only {len(pool)} sentences for {n} samples")
    calib_at = sorted(rng.choice(len(pools[0]), size=n_calib, replace=False))
    calib = [pools[0][i] for i in calib_at]
    drawn = sorted(rng.choice(len(pools[1]), size=n_heldout, replace=False))
    taken = set(calib)
    rest = (i for i in range(len(pools[1])) if i not in set(drawn) and pools[1][i] not in taken)
    drawn = sorted(i if pools[1][i] not in taken else next(rest) for i in drawn)  # never in both splits
    heldout = [pools[1][i] for i in drawn]
    if more_calib:
        left = [i for i in range(len(pools[0])) if i not in set(calib_at) and pools[0][i] not in set(heldout)]
        calib += [pools[0][left[i]] for i in sorted(rng.choice(len(left), size=more_calib, replace=False))]
    return calib, heldout


class WordPiece:
    """BERT's uncased tokenizer (BasicTokenizer + WordpieceTokenizer) over a given vocabulary."""

    def __init__(self, vocab: dict[str, int], unk: str = "[UNK]", max_chars: int = 100):
        self.vocab, self.unk, self.max_chars = vocab, unk, max_chars
        self.cls, self.sep, self.pad = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]

    @classmethod
    def load(cls, path: Path) -> "WordPiece":
        """From a tokenizer.json (its WordPiece model's vocab) or a vocab.txt (one token a line)."""
        text = Path(path).read_text(encoding="utf-8")
        if Path(path).suffix == ".json":
            model = json.loads(text)["model"]
            if model.get("type") != "WordPiece":
                raise SystemExit(f"text_data: {path} is not a WordPiece tokenizer")
            return cls(dict(model["vocab"]), model.get("unk_token", "[UNK]"))
        return cls({token: i for i, token in enumerate(text.splitlines())})

    @staticmethod
    def _is_punct(ch: str) -> bool:
        cp = ord(ch)
        return (33 <= cp <= 47) or (58 <= cp <= 64) or (91 <= cp <= 96) or (123 <= cp <= 126) \
            or unicodedata.category(ch).startswith("P")

    @staticmethod
    def _is_cjk(cp: int) -> bool:
        return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                                 (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                                 (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))

    def basic(self, text: str) -> list[str]:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue
            out.append(f" {ch} " if self._is_cjk(cp) else (" " if ch.isspace() else ch))
        words = []
        for word in "".join(out).split():
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
            piece = ""
            for ch in word:
                if self._is_punct(ch):
                    words += [piece, ch] if piece else [ch]
                    piece = ""
                else:
                    piece += ch
            if piece:
                words.append(piece)
        return words

    def wordpiece(self, word: str) -> list[str]:
        if len(word) > self.max_chars:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk]
            pieces.append(piece)
            start = end
        return pieces

    def ids(self, text: str) -> list[int]:
        return [self.vocab[p] for w in self.basic(text) for p in self.wordpiece(w)]

    def encode(self, texts: list[str], length: int) -> dict[str, np.ndarray]:
        """input_ids, attention_mask, token_type_ids: int64 [len(texts), length], [CLS] x [SEP] then padding."""
        ids = np.full((len(texts), length), self.pad, dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for i, text in enumerate(texts):
            row = [self.cls] + self.ids(text)[:length - 2] + [self.sep]
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
