"""ksds map: a picture of a data set: one cell per CI, a row per CA, coloured by how full each CI is.

The file is read CI by CI without opening the data set (so damaged data sets can be drawn too): each CI is decoded
and checked (CRC32C, self-address); the index is walked from its top CI to put the CAs in key order. A CA's row
starts with its sequence-set CI, then its CIs in the order they lie in the file; a CI that the sequence set does not
point at is free. Index-set CIs come first, a row per level; free CAs, free index CIs and anything that fits
nowhere (damaged CIs the index does not reach, orphans) come last.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from ..ci import DataCI, FreeCI, IndexCI
from ..definition import Definition
from ..errors import DamagedCIError
from ..format import CI_FREE_INDEX, State
from ..wal_view import View, in_use
from ._common import (
    DEFAULT_ENCODING,
    OK,
    USAGE,
    CliError,
    Progress,
    Subparsers,
    add_verb,
    check_encoding,
    require_file,
    short_key,
    whole_number,
)

EXAMPLES = """
  ksds map cust.ksds                        (the text form, one character per CI)
  ksds map cust.ksds --output cust.png      (a picture; needs matplotlib: pip install matplotlib)
  ksds map cust.ksds --output cust.svg      (the same picture as SVG, no matplotlib needed)
"""

# --- the model ---------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One CI as the map shows it."""

    ci: int
    kind: str  # data | free | damaged | seq | index | free-index | unused
    records: int = 0
    fill: float = 0.0  # data: records / records per CI
    level: int = 0  # index CIs
    note: str = ""
    low: bytes = b""  # data CIs with records: the first and last record's key
    high: bytes = b""


@dataclass
class Row:
    label: str
    kind: str  # index | ca | free-ca | free-index | other
    cells: list[Cell]
    lead: Cell | None = None  # a CA's sequence-set CI
    low: bytes | None = None  # a CA: the first and last key of its records (None: it has none)
    high: bytes | None = None

    @property
    def records(self) -> int:
        return sum(c.records for c in self.cells)


@dataclass
class Model:
    path: str
    defn: Definition
    state: State
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    records: int = 0
    data_cis: int = 0
    damaged: int = 0
    encoding: str = DEFAULT_ENCODING  # the code page keys are shown in (latin-1: ASCII or EBCDIC text, else hex)

    @property
    def width(self) -> int:
        """Cells in a CA row (without its sequence-set CI)."""
        return self.defn.cis_per_ca


@dataclass
class _Info:
    kind: str  # data | seq | index | free-index | free-ca | unused | damaged
    records: int = 0
    level: int = 0
    ca: int = 0
    ptrs: tuple[int, ...] = ()
    high: bytes = b""  # data: the last record's key; seq: the CA's high key in the index
    next: int = 0
    note: str = ""
    low: bytes = b""  # data: the first record's key


def _read(
    path: str, progress: Callable[[int, int], None] | None
) -> tuple[Definition, State, dict[int, _Info], list[str]]:
    notes = []
    # a data set not closed cleanly: show it as recovery will leave it (the log's committed CIs laid over the file);
    # one open elsewhere: as of its last committed transaction (a live view: no CI torn by a checkpoint)
    try:
        busy = in_use(path)
    except OSError:
        busy = False  # View says what is wrong
    with View(path, live=busy) as view:
        defn, state = view.definition, view.state
        cisz = defn.ci_size
        size = view.file_size
        infos: dict[int, _Info] = {}
        if view.log_error is not None:
            notes.append(f"its log is damaged and not applied here ({view.log_error}); see ksds verify --recover")
        if busy:
            notes.append(
                f"open in another process: shown as of its transaction {view.state.txn} (the committed "
                "transactions of its log laid over the file)"
            )
        elif view.transactions:
            notes.append(
                f"not closed cleanly: shown with the {view.transactions} committed transactions of its "
                "log applied, as recovery (ksds verify, or any open) will leave it"
            )
        if size < state.hurba * cisz:
            notes.append(f"the file is truncated: CIs {size // cisz} to {state.hurba - 1} are missing")
        for ci in range(1, state.hurba):
            data = view.ci(ci)
            if progress is not None and ci % 512 == 0:
                progress(ci, state.hurba)
            if len(data) < cisz:
                infos[ci] = _Info("damaged", note="missing: beyond the end of the file")
                continue
            if not any(data):
                infos[ci] = _Info("unused")
                continue
            try:
                obj = view.decode(data, ci)
            except DamagedCIError as e:
                infos[ci] = _Info("damaged", note=str(e).split(") ", 1)[-1])
                continue
            if isinstance(obj, DataCI):
                keys = obj.keys
                low, high = (keys[0], keys[-1]) if keys else (b"", b"")
                infos[ci] = _Info("data", records=len(keys), low=low, high=high)
            elif isinstance(obj, IndexCI):
                kind = "seq" if obj.level == 1 else "index"
                infos[ci] = _Info(kind, level=obj.level, ca=obj.ca, ptrs=tuple(obj.ptrs), high=obj.keys[-1])
            elif isinstance(obj, FreeCI):
                infos[ci] = _Info("free-index" if obj.kind == CI_FREE_INDEX else "free-ca", next=obj.next)
    return defn, state, infos, notes


def build(
    path: str, progress: Callable[[int, int], None] | None = None, encoding: str = DEFAULT_ENCODING
) -> Model:
    """Read the data set at ``path`` and lay out its CIs in rows (keys shown in ``encoding``)."""
    defn, state, infos, notes = _read(path, progress)
    m = Model(path, defn, state, notes=notes, encoding=encoding)
    rpc = defn.records_per_ci
    cpa = defn.cis_per_ca
    placed: set[int] = set()

    # walk each tree's index from its top (the base's, then each alternate index's): index-set CIs per level,
    # sequence-set CIs in key order
    seen: set[int] = set()

    def walk(top: int) -> tuple[dict[int, list[int]], list[int]]:
        levels: dict[int, list[int]] = {}
        seqs: list[int] = []

        def go(ci: int) -> None:
            info = infos.get(ci)
            if ci in seen or info is None or info.kind not in ("seq", "index"):
                return
            seen.add(ci)
            if info.kind == "seq":
                seqs.append(ci)
                return
            levels.setdefault(info.level, []).append(ci)
            for p in info.ptrs:
                go(p)

        go(top)
        return levels, seqs

    trees = [("", state.root, rpc)] + [
        (f"{a.name} ", a.root, (defn.ci_size - 16) // (a.key_length + defn.key_length)) for a in state.aixes
    ]
    walks = [(prefix, per_ci, *walk(top)) for prefix, top, per_ci in trees]
    if not walks[0][3]:
        m.notes.append("the index could not be walked from its top CI: CAs are shown in file order")
    stale = sorted((ci for ci, i in infos.items() if i.kind == "seq" and ci not in seen), key=lambda c: infos[c].high)
    walks[0][3].extend(stale)

    def cell(ci: int, kind: str | None = None, per_ci: int = rpc, base: bool = True) -> Cell:
        info = infos.get(ci, _Info("damaged", note="outside the data set"))
        k = kind or info.kind
        if k == "data":
            if base:
                m.records += info.records
                m.data_cis += 1
            return Cell(ci, "data", info.records, info.records / per_ci if per_ci else 0.0, low=info.low,
                        high=info.high)
        if k == "damaged":
            m.damaged += 1
            return Cell(ci, "damaged", note=info.note)
        if k in ("seq", "index"):
            return Cell(ci, k, level=info.level)
        return Cell(ci, k)

    for prefix, per_ci, levels, seqs in walks:
        base = not prefix
        # index-set rows, the top level first
        for level in sorted(levels, reverse=True):
            cis = levels[level]
            for i in range(0, len(cis), cpa):
                m.rows.append(Row(f"{prefix}index L{level}", "index", [cell(c) for c in cis[i : i + cpa]]))
                placed.update(cis[i : i + cpa])
        # CA rows, in key order
        for n, seq in enumerate(seqs):
            info = infos[seq]
            used = set(info.ptrs)
            cells = []
            for ci in range(info.ca, info.ca + cpa):
                if ci in used:
                    kind = infos.get(ci, _Info("damaged")).kind
                    cells.append(cell(ci, "data" if kind == "data" else "damaged", per_ci, base))
                    if kind not in ("data", "damaged"):
                        cells[-1].note = f"the sequence set points at a {kind} CI"
                else:
                    cells.append(Cell(ci, "free"))
                placed.add(ci)
            label = f"{prefix}CA {n}" if seq not in stale else "CA unreached"
            full = [infos[p] for p in info.ptrs if infos.get(p, _Info("")).kind == "data" and infos[p].records]
            low = full[0].low if full else None
            high = full[-1].high if full else None
            m.rows.append(Row(label, "ca", cells, lead=cell(seq), low=low, high=high))
            placed.add(seq)
    # free CAs
    ca = state.free_ca
    while ca and ca not in placed and infos.get(ca, _Info("")).kind == "free-ca":
        m.rows.append(Row("free CA", "free-ca", [Cell(c, "free") for c in range(ca, ca + cpa)]))
        placed.update(range(ca, ca + cpa))
        ca = infos[ca].next
    # free index CIs, then whatever fits nowhere
    rest = [ci for ci in range(1, state.hurba) if ci not in placed]
    free_index = [ci for ci in rest if infos[ci].kind == "free-index"]
    other = [ci for ci in rest if infos[ci].kind not in ("free-index", "unused")]
    for label, kind, cis in (("free index", "free-index", free_index), ("other", "other", other)):
        for i in range(0, len(cis), cpa):
            cells = [cell(c) for c in cis[i : i + cpa]]
            for c in cells:
                if c.kind == "data":
                    c.note = "a data CI no sequence set points at"
            m.rows.append(Row(label, kind, cells))
    return m


# --- the text form -------------------------------------------------------------------------------------------------

LEGEND = (
    "legend: # full CI, 0-9 fill in tenths (3 = 30-39%), _ empty data CI, . free CI, X damaged (CRC or missing), "
    "S sequence-set CI, 2-9 index-set CI of that level, f free index CI, ? unused"
)


def char(c: Cell) -> str:
    if c.kind == "data":
        if c.records == 0:
            return "_"
        return "#" if c.fill >= 1.0 else str(min(9, int(c.fill * 10)))
    return {
        "free": ".",
        "damaged": "X",
        "seq": "S",
        "free-index": "f",
        "unused": "?",
    }.get(c.kind, str(c.level) if c.level < 10 else "I")


def title(m: Model) -> list[str]:
    d = m.defn
    st = m.state
    fill = m.records / (m.data_cis * d.records_per_ci) if m.data_cis else 0.0
    prefixes = tuple(f"{a.name} " for a in st.aixes)
    cas = sum(1 for r in m.rows if r.kind == "ca" and not (prefixes and r.label.startswith(prefixes)))
    lines = [
        f"{m.path}: KEYS({d.key_length} {d.key_offset}) RECORDSIZE({d.record_length}) CISIZE({d.ci_size}) "
        f"CI/CA({d.cis_per_ca}) FREESPACE({d.freespace[0]} {d.freespace[1]}), {d.records_per_ci} records per CI",
        f"{m.records} records in {m.data_cis} data CIs ({fill:.0%} full) in {cas} CAs; {st.levels} index levels; "
        f"{st.splits_ci} CI splits, {st.splits_ca} CA splits" + (f"; {m.damaged} damaged CIs" if m.damaged else ""),
    ]
    for a in st.aixes:
        lines.append(
            f"alternate index {a.name}: KEYS({a.key_length} {a.key_offset}) "
            f"{'UNIQUEKEY' if a.unique else 'NONUNIQUEKEY'} {'UPGRADE' if a.upgrade else 'NOUPGRADE'}"
            f"{'' if a.current else ' (not current)'}: {a.rec_total} records in {a.data_cis} data CIs in "
            f"{a.ca_count} CAs; {a.levels} index levels (its rows are labelled {a.name})"
        )
    return lines


KEY_LABEL = 20  # characters of a key in a CA's label (longer ones are cut, ending in ~)


def key_range(r: Row, encoding: str, limit: int = KEY_LABEL) -> str:
    """A CA's keys: ``00000010..00000019`` (its first and last record's), or ``(no records)``."""
    if r.low is None or r.high is None:
        return "(no records)" if r.kind == "ca" else ""
    return f"{short_key(r.low, encoding, limit)}..{short_key(r.high, encoding, limit)}"


def text(m: Model, width: int = 100) -> str:
    """The text form: a line per row (``CA 3  00000010..00000019  CI 42 S ####...  37 records``). A row that does
    not fit in ``width`` columns takes several: its label, keys and record count, then its CIs, wrapped."""
    lines = title(m) + [f"note: {n}" for n in m.notes] + [""]
    ranges = [key_range(r, m.encoding) for r in m.rows]
    kw = max((len(k) for k in ranges), default=0)
    for r, keys in zip(m.rows, ranges, strict=True):
        lead = char(r.lead) if r.lead is not None else " "
        cells = "".join(char(c) for c in r.cells)
        first = r.cells[0].ci if r.cells else 0
        tail = f"  {r.records} records" if r.kind == "ca" else ""
        head = f"{r.label:<12} {keys:<{kw}} " if kw else f"{r.label:<12} "
        line = f"{head}CI {first:>7} {lead} {cells.ljust(m.width if r.kind == 'ca' else 0)}{tail}"
        if len(line) <= width:
            lines.append(line)
            continue
        lines.append(f"{r.label} {keys}{tail}".rstrip())
        per_line = max(8, width - 18)  # "    CI 1234567 S " then the cells
        for i in range(0, max(1, len(r.cells)), per_line):
            chunk = r.cells[i : i + per_line]
            ci = chunk[0].ci if chunk else first
            lines.append(f"    CI {ci:>7} {lead if i == 0 else ' '} {''.join(char(c) for c in chunk)}")
    lines += ["", LEGEND]
    return "\n".join(lines)


# --- the picture -------------------------------------------------------------------------------------------------

FILL_STOPS = ((0.0, (0xDE, 0xEB, 0xF7)), (0.5, (0x6B, 0xAE, 0xD6)), (1.0, (0x08, 0x30, 0x6B)))
COLOURS = {
    "free": "#ffffff",
    "damaged": "#d62728",
    "seq": "#fdd49e",
    "index": "#6a51a3",
    "free-index": "#ffffff",
    "unused": "#eeeeee",
}
STROKES = {"seq": "#e6550d", "free": "#b0b0b0", "free-index": "#6a51a3", "unused": "#d0d0d0", "damaged": "#7f0000"}
TEXT = "#222222"
MAX_HEIGHT = 2400
WRAP = 64  # most cells on one line of a row (a bigger CA takes several lines)
LEGEND_WIDTH = 740  # pixels the legend line takes (see layout)
MAX_WIDTH = 8000


def fill_colour(fill: float) -> str:
    f = max(0.0, min(1.0, fill))
    for (a, ca), (b, cb) in zip(FILL_STOPS, FILL_STOPS[1:], strict=False):
        if f <= b:
            t = (f - a) / (b - a)
            rgb = (round(x + (y - x) * t) for x, y in zip(ca, cb, strict=True))
            return "#" + "".join(f"{v:02x}" for v in rgb)
    return "#08306b"


def colour(c: Cell) -> str:
    return fill_colour(c.fill) if c.kind == "data" else COLOURS.get(c.kind, "#eeeeee")


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    stroke: str | None = None
    tip: str = ""
    cross: bool = False  # a damaged CI: an X over it
    hover: bool = False  # not drawn: only its tip, in the SVG (a CA row's keys)


@dataclass
class Text:
    x: float
    y: float  # the baseline
    s: str
    size: float  # pixels
    colour: str = TEXT
    anchor: str = "start"  # start | middle | end
    bold: bool = False


@dataclass
class Picture:
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    texts: list[Text] = field(default_factory=list)


def tip(c: Cell, rpc: int, encoding: str = DEFAULT_ENCODING) -> str:
    if c.kind == "data":
        s = f"CI {c.ci}: data, {c.records}/{rpc} records"
        if c.records:
            s += f", keys {short_key(c.low, encoding, 64)}..{short_key(c.high, encoding, 64)}"
    elif c.kind in ("seq", "index"):
        s = f"CI {c.ci}: {'sequence set' if c.kind == 'seq' else 'index set'}, level {c.level}"
    else:
        s = f"CI {c.ci}: {c.kind}"
    return s + (f" ({c.note})" if c.note else "")


def layout(m: Model) -> Picture:
    """Place every cell, label, title and legend line in pixels.

    A CA of more than ``WRAP`` CIs takes several lines of its row. Rows are set in newspaper columns, as many
    as make the picture about 3:2 and no taller than ``MAX_HEIGHT``; cells shrink until it fits ``MAX_WIDTH``.
    """
    cpa = m.width
    rows = m.rows
    wrap = min(WRAP, cpa)
    margin = 16
    t = title(m)
    keys = [key_range(r, m.encoding, 16) for r in rows]
    key_chars = max((len(k) + 2 for k in keys), default=0)
    text_w = max(
        [len(f"ksds map  {t[0]}") * 14 * 0.66, len(t[1]) * 12 * 0.62, LEGEND_WIDTH]
        + [len(f"note: {n}") * 12 * 0.62 for n in m.notes]
    )
    head_h = 60 + 16 * len(m.notes)
    legend_h = 46
    avail = MAX_HEIGHT - head_h - legend_h - 2 * margin
    for s in (18, 14, 12, 10, 8, 6, 4, 3, 2):
        if s > max(4, 720 // (wrap + 1)):
            continue
        gap = 2 if s >= 8 else 1
        pitch = s + gap
        labels = s >= 8
        font = min(12.0, max(10.0, s * 0.75))
        label_w = int(font * 7.5) if labels else 0
        tail_w = int(font * 6.5 + font * 0.62 * key_chars) if labels else 0
        col_w = label_w + (wrap + 1) * pitch + s // 2 + 4 + tail_w + 16
        heights = [max(1, math.ceil(len(r.cells) / wrap)) * pitch + (2 * gap if cpa > wrap else 0) for r in rows]
        total = sum(heights)
        cols = max(1, round(math.sqrt(1.5 * total / col_w)), math.ceil(total / avail))
        # fill the columns in order, each to total / cols or just past it
        target = math.ceil(total / cols)
        places: list[tuple[int, int]] = []  # (column, y offset) of each row
        col = used = 0
        for h in heights:
            if used >= target:
                col += 1
                used = 0
            places.append((col, used))
            used += h
        cols = col + 1
        body_h = max((y + h for (_, y), h in zip(places, heights, strict=True)), default=pitch)
        width = max(2 * margin + cols * col_w, 2 * margin + math.ceil(text_w))
        height = head_h + body_h + legend_h + 2 * margin
        if width <= MAX_WIDTH and body_h <= avail:
            break
    else:
        raise CliError(f"{len(rows)} rows of {cpa} CIs are too many for a picture: use --text")
    pic = Picture(int(width), int(height))
    pic.texts.append(Text(margin, margin + 14, f"ksds map  {t[0]}", 14, bold=True))
    pic.texts.append(Text(margin, margin + 34, t[1], 12))
    for i, note in enumerate(m.notes):
        pic.texts.append(Text(margin, margin + 52 + 16 * i, f"note: {note}", 12, colour="#b00000"))
    top = margin + head_h
    rpc = m.defn.records_per_ci
    for r, (col, dy), h, span in zip(rows, places, heights, keys, strict=True):
        x0 = margin + col * col_w
        y = top + dy
        if r.kind == "ca":  # hovering anywhere on the row shows its keys (in the SVG; behind the cells)
            tip_keys = key_range(r, m.encoding, 64)
            row_tip = f"{r.label}: keys {tip_keys}, {r.records} records"
            pic.rects.append(Rect(x0, y, col_w - 16, h - gap, "#ffffff", tip=row_tip, hover=True))
        if labels:
            pic.texts.append(Text(x0, y + s * 0.8, r.label, font))
        x: float = x0 + label_w
        if r.lead is not None:
            pic.rects.append(_rect(r.lead, x, y, s, rpc))
        x += pitch + s // 2
        for j, c in enumerate(r.cells):
            line, k = divmod(j, wrap)
            cx, cy = x + k * pitch, y + line * pitch
            pic.rects.append(_rect(c, cx, cy, s, rpc, m.encoding))
            if c.kind == "index" and s >= 12:
                pic.texts.append(Text(cx + s / 2, cy + s * 0.78, str(c.level), s * 0.7, "#ffffff", "middle"))
        if labels and r.kind == "ca":
            pic.texts.append(Text(x + wrap * pitch + 6, y + s * 0.8, f"{r.records} rec", font, "#555555"))
            pic.texts.append(Text(x + wrap * pitch + 6 + font * 5.5, y + s * 0.8, span, font, "#555555"))
    # the legend
    ly = height - margin - legend_h + 12
    x = float(margin)
    pic.texts.append(Text(x, ly + 11, "fill:", 12))
    x += 32
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        pic.rects.append(Rect(x, ly, 14, 14, fill_colour(f)))
        pic.texts.append(Text(x + 18, ly + 11, f"{f:.0%}", 11))
        x += 56
    x += 10
    for name, c in (
        ("free CI", Cell(0, "free")),
        ("damaged", Cell(0, "damaged")),
        ("sequence set", Cell(0, "seq")),
        ("index set", Cell(0, "index")),
        ("free index CI", Cell(0, "free-index")),
    ):
        r0 = _rect(c, x, ly, 14, rpc)
        r0.tip = ""
        pic.rects.append(r0)
        pic.texts.append(Text(x + 18, ly + 11, name, 11))
        x += 28 + 7 * len(name)
    pic.texts.append(
        Text(margin, ly + 32, "one cell per CI, a row per CA in key order (its sequence-set CI first)", 11, "#555555")
    )
    return pic


def _rect(c: Cell, x: float, y: float, s: float, rpc: int, encoding: str = DEFAULT_ENCODING) -> Rect:
    return Rect(x, y, s, s, colour(c), STROKES.get(c.kind), tip(c, rpc, encoding), c.kind == "damaged")


def svg(pic: Picture) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{pic.width}" height="{pic.height}" '
        f'viewBox="0 0 {pic.width} {pic.height}" font-family="DejaVu Sans, Verdana, Arial, sans-serif">',
        f'<rect x="0" y="0" width="{pic.width}" height="{pic.height}" fill="#ffffff"/>',
    ]
    for r in pic.rects:
        if r.hover:
            out.append(
                f'<rect x="{r.x:g}" y="{r.y:g}" width="{r.w:g}" height="{r.h:g}" fill="#ffffff" fill-opacity="0">'
                f"<title>{escape(r.tip)}</title></rect>"
            )
            continue
        stroke = f' stroke="{r.stroke}" stroke-width="1"' if r.stroke else ""
        body = f"<title>{escape(r.tip)}</title>" if r.tip else ""
        out.append(
            f'<rect x="{r.x:g}" y="{r.y:g}" width="{r.w - 0.5:g}" height="{r.h - 0.5:g}" fill="{r.fill}"{stroke}'
            + (f">{body}</rect>" if body else "/>")
        )
        if r.cross:
            out.append(
                f'<path d="M{r.x + 2:g},{r.y + 2:g} L{r.x + r.w - 2.5:g},{r.y + r.h - 2.5:g} '
                f'M{r.x + r.w - 2.5:g},{r.y + 2:g} L{r.x + 2:g},{r.y + r.h - 2.5:g}" '
                'stroke="#ffffff" stroke-width="1.2"/>'
            )
    for t in pic.texts:
        weight = ' font-weight="bold"' if t.bold else ""
        out.append(
            f'<text x="{t.x:g}" y="{t.y:g}" font-size="{t.size:g}" fill="{t.colour}" text-anchor="{t.anchor}"{weight}>'
            f"{escape(t.s)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def png(pic: Picture, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.collections import LineCollection, PatchCollection
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError:
        raise CliError(
            "a PNG needs matplotlib (pip install matplotlib); or write an SVG: --output FILE.svg, or use --text"
        ) from None
    dpi = 100
    fig = Figure(figsize=(pic.width / dpi, pic.height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, pic.width)
    ax.set_ylim(pic.height, 0)
    ax.axis("off")
    drawn = [r for r in pic.rects if not r.hover]
    patches = [Rectangle((r.x, r.y), r.w - 0.5, r.h - 0.5) for r in drawn]
    ax.add_collection(
        PatchCollection(
            patches,
            facecolors=[r.fill for r in drawn],
            edgecolors=[r.stroke or r.fill for r in drawn],
            linewidths=0.6,
        )
    )
    crosses = []
    for r in pic.rects:
        if r.cross:
            crosses.append([(r.x + 2, r.y + 2), (r.x + r.w - 2.5, r.y + r.h - 2.5)])
            crosses.append([(r.x + r.w - 2.5, r.y + 2), (r.x + 2, r.y + r.h - 2.5)])
    if crosses:
        ax.add_collection(LineCollection(crosses, colors="#ffffff", linewidths=1.0))
    pt = 72 / dpi
    for t in pic.texts:
        ax.text(
            t.x,
            t.y,
            t.s,
            fontsize=t.size * pt,
            color=t.colour,
            ha={"start": "left", "middle": "center", "end": "right"}[t.anchor],
            va="baseline",
            fontweight="bold" if t.bold else "normal",
        )
    fig.savefig(path, dpi=dpi, format="png", facecolor="#ffffff")


# --- the verb ----------------------------------------------------------------------------------------------------


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "map",
        "draw the data set: a cell per CI, a row per CA",
        "Draw the data set as a grid: one cell per CI, a row per CA (in key order, its sequence-set CI first), "
        "data CIs coloured by how full they are, free CIs white, damaged CIs (failing their CRC32C, or missing) "
        "red with an X, index CIs purple with their level. Half-full runs show where CI splits happened; rows "
        "with white cells, CA splits and free space. --output writes a PNG (with matplotlib) or an SVG; "
        "--text (the default without --output) prints one character per CI.",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--output", "-o", metavar="FILE", help="write the picture to FILE.png or FILE.svg")
    p.add_argument("--text", action="store_true", help="print the text form (also with --output)")
    p.add_argument(
        "--width",
        type=whole_number(p.prog, "--width", 40, 10000),
        metavar="N",
        help="the text form's columns: a CA wider than that wraps (default: the terminal's, else 100)",
    )
    p.add_argument(
        "--encoding",
        default=DEFAULT_ENCODING,
        metavar="CODEPAGE",
        help="code page of the keys in the CA labels (default: ASCII or EBCDIC text where they are, else hex)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_file(args.path)
    kind = None
    if args.output is not None:
        kind = os.path.splitext(args.output)[1].lower()
        if kind not in (".png", ".svg"):
            raise CliError(f"--output {args.output}: the name must end in .png or .svg", USAGE)
    encoding = check_encoding(args.encoding)
    with Progress("ksds map") as bar:
        m = build(args.path, lambda d, t: bar.update(d, t, "CIs"), encoding)
    if args.text or args.output is None:
        width = args.width if args.width is not None else shutil.get_terminal_size((100, 24)).columns
        sys.stdout.write(text(m, width) + "\n")
    if args.output is not None:
        pic = layout(m)
        if kind == ".svg":
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(svg(pic))
        else:
            png(pic, args.output)
        print(f"wrote {args.output} ({pic.width} x {pic.height} pixels, {len(m.rows)} rows)")
    return OK


__all__ = ["build", "layout", "svg", "png", "text"]
