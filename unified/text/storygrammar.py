"""The procedural story corpus: a small probabilistic grammar of simple English stories whose
true entropy rate is known exactly.

Why: the language phase must work offline, and a corpus whose generating distribution is known
lets the perplexity suite say how far a model is from the floor (no model can beat the true
entropy rate on average).

Shape of a story (all ASCII, one line):
  intro   "Once upon a time, there was a little girl named Lily. She had a friend named Tom."
          (opening, first character's name/gender/kind, second character introduced by one of two
          templates; the two names differ)
  body    a Markov chain over states (subject in {A, B, both}) x (object in play: none or one of
          eight). Each step emits one sentence: the subject moves (same -> pronoun "She"/"He"/
          "They"; another -> its name or "A and B"), then a predicate with agreement ("was"/"were",
          "her"/"his", "him"/"her") and objects referred back to ("the kite" / "it"); or, with
          probability STOP, an ending sentence closes the story.
Every choice is rendered so that the text determines the derivation (no two derivations give the
same story), hence H(story) = H(derivation), computed exactly:
  H = H(intro) + sum_s visits(s) * H(edges out of s),  E[bytes] = E[intro bytes] + sum_s visits(s) *
  sum_e p_e E[len(e)],  visits = expected visits of each body state, from (I - Q)^-1.
The entropy rate per byte is H / E[bytes] (a story's EOS is implied by its ending, so the stream
of stories + EOS has exactly this many bits per text byte). `log2_prob` scores any text exactly
(forward algorithm over the grammar) so tests check the closed form against sampled stories.
"""
from __future__ import annotations

import bisect
import math
import random
import string
from dataclasses import dataclass

import numpy as np

# ---- vocabulary (weights are relative; Zipf-like so the distribution is not uniform) ----------
OPENINGS = (("Once upon a time", 5), ("One day", 3), ("Long ago", 2))
NAMES = {"f": ("Lily", "Mia", "Emma", "Anna", "Sara", "Lucy", "Amy", "Zoe", "Ella", "Rose"),
         "m": ("Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Joe", "Dan")}
KINDS = {"f": (("girl", 4), ("little girl", 3), ("princess", 1)),
         "m": (("boy", 4), ("little boy", 3), ("prince", 1))}
PRONOUNS = {"f": ("She", "her", "her"), "m": ("He", "him", "his")}  # subject, object, possessive
FRIEND_INTROS = ((" {HeA} had a friend named {B}.", 3), (" One day, {A} met a {kindB} named {B}.", 2))
SUBJECT_MOVES = {"same": 0.5, "other": 0.25, "both": 0.25}
TEMPLATES = {"be": 4, "go": 5, "find": 3, "act": 3, "give": 1, "say": 2, "smile": 2}
ADJECTIVES = ("happy", "sad", "tired", "hungry", "excited", "scared", "brave", "sleepy")
GO_VERBS = ("ran", "walked", "jumped", "danced", "played", "sang")
PLACES = ("to the park", "in the garden", "by the river", "at home", "in the rain", "all day")
COLORS = ("red", "blue", "green", "big", "little", "shiny")
OBJECTS = ("ball", "kite", "box", "hat", "book", "cake", "boat", "drum")
ACT_VERBS = ("liked", "hugged", "held", "shared", "lost")  # "lost" puts the object out of play
QUOTES = ("I am so happy!", "Let's play!", "Look at this!", "This is fun!", "I love you!")
ENDINGS = ((" The end.", 5), (" And they lived happily ever after.", 3), (" It was the best day ever.", 2))
STOP = 0.15  # probability that a story ends after each sentence

SUBJECTS = ("A", "B", "T")  # first character, second character, both
GRAMMAR_VERSION = "1"


def _zipf(items, s: float = 0.7) -> list[tuple[str, float]]:
    """Items with weights 1/(rank+1)^s."""
    return [(x, 1.0 / (i + 1) ** s) for i, x in enumerate(items)]


def _normalize(pairs) -> list[tuple[object, float]]:
    total = sum(w for _, w in pairs)
    return [(x, w / total) for x, w in pairs]


@dataclass(frozen=True)
class Edge:
    """One body transition: probability, text template (cast fields in braces), next state
    (-1 = the story ends)."""

    prob: float
    template: str
    next: int


@dataclass(frozen=True)
class EntropyRate:
    """The exact entropy of the grammar: bits per story, mean bytes per story, bits per byte,
    and bits per byte-level token (a byte tokenizer adds one EOS token per story)."""

    bits_per_story: float
    bytes_per_story: float
    bits_per_byte: float
    bits_per_byte_token: float


class StoryGrammar:
    """The probabilistic story grammar: sample stories, score texts exactly, entropy in closed form."""

    def __init__(self) -> None:
        self.intros = self._build_intros()
        self._intro_cum = list(np.cumsum([p for p, _, _ in self.intros]))
        self._intro_of_text: dict[str, list[tuple[float, dict[str, str]]]] = {}
        for p, text, cast in self.intros:
            self._intro_of_text.setdefault(text, []).append((p, cast))
        self.n_states = len(SUBJECTS) * (len(OBJECTS) + 1)
        self.start = self.state("A", -1)
        self.edges = [self._build_edges(s) for s in range(self.n_states)]
        self._edge_cum = [list(np.cumsum([e.prob for e in es])) for es in self.edges]

    # ---- construction ---------------------------------------------------------------------
    @staticmethod
    def state(subject: str, obj: int) -> int:
        """State id of (subject in SUBJECTS, object index or -1 for none)."""
        return SUBJECTS.index(subject) * (len(OBJECTS) + 1) + obj + 1

    def decode_state(self, s: int) -> tuple[str, int]:
        """(subject, object index or -1) of a state id."""
        return SUBJECTS[s // (len(OBJECTS) + 1)], s % (len(OBJECTS) + 1) - 1

    @staticmethod
    def _build_intros() -> list[tuple[float, str, dict[str, str]]]:
        """Every intro (probability, text, cast fields): opening, A, A's kind, friend template, B."""
        names = _normalize([((g, n), w) for g in ("f", "m") for n, w in _zipf(NAMES[g])])
        out = []
        for opening, po in _normalize(OPENINGS):
            for (ga, a), pa in names:
                others = _normalize([(x, w) for x, w in names if x[1] != a])
                for kind_a, pk in _normalize(KINDS[ga]):
                    for (gb, b), pb in others:
                        for tmpl, pt in _normalize(FRIEND_INTROS):
                            kinds_b = _normalize(KINDS[gb]) if "{kindB}" in tmpl else [("", 1.0)]
                            for kind_b, pkb in kinds_b:
                                cast = {"A": a, "B": b, "kindB": kind_b}
                                for x, g in (("A", ga), ("B", gb)):
                                    cast[f"He{x}"], cast[f"him{x}"], cast[f"his{x}"] = PRONOUNS[g]
                                text = f"{opening}, there was a {kind_a} named {a}." + tmpl.format(**cast)
                                out.append((po * pa * pk * pb * pt * pkb, text, cast))
        return out

    def _build_edges(self, s: int) -> list[Edge]:
        """The transitions out of state `s`: a subject move and a predicate, or an ending."""
        subj, obj = self.decode_state(s)
        edges = [Edge(STOP * p, text, -1) for text, p in _normalize(ENDINGS)]
        moves = {"A": {"A": "{HeA}", "B": "{B}", "T": "{A} and {B}"},
                 "B": {"B": "{HeB}", "A": "{A}", "T": "{A} and {B}"},
                 "T": {"T": "They", "A": "{A}", "B": "{B}"}}[subj]
        for target, subject_text in moves.items():
            p_move = SUBJECT_MOVES["same" if target == subj else ("both" if target == "T" else "other")]
            for pred, p_pred, new_obj in self._predicates(target, obj):
                edges.append(Edge((1 - STOP) * p_move * p_pred, f" {subject_text} {pred}", self.state(target, new_obj)))
        templates = [e.template for e in edges]
        assert len(set(templates)) == len(templates), "ambiguous grammar: repeated edge text"
        assert abs(sum(e.prob for e in edges) - 1.0) < 1e-12
        return edges

    @staticmethod
    def _predicates(subject: str, obj: int) -> list[tuple[str, float, int]]:
        """(predicate text, probability, object afterwards) for a subject and the object in play."""
        single = subject != "T"
        other = {"A": "B", "B": "A"}.get(subject, "")
        available = {k: w for k, w in TEMPLATES.items()
                     if not (k in ("act", "give") and obj < 0) and not (k == "give" and not single)}
        out: list[tuple[str, float, int]] = []
        for kind, pk in _normalize(list(available.items())):
            if kind == "be":
                verb = "was" if single else "were"
                out += [(f"{verb} {adj}.", pk * pa, obj) for adj, pa in _normalize(_zipf(ADJECTIVES))]
            elif kind == "go":
                out += [(f"{v} {place}.", pk * pv * pp, obj) for v, pv in _normalize(_zipf(GO_VERBS))
                        for place, pp in _normalize(_zipf(PLACES))]
            elif kind == "find":
                out += [(f"found a {c} {o}.", pk * pc * po, oi) for c, pc in _normalize(_zipf(COLORS))
                        for oi, (o, po) in enumerate(_normalize(_zipf(OBJECTS)))]
            elif kind == "act":
                for v, pv in _normalize(_zipf(ACT_VERBS)):
                    after = -1 if v == "lost" else obj
                    out += [(f"{v} the {OBJECTS[obj]}.", pk * pv * 0.6, after), (f"{v} it.", pk * pv * 0.4, after)]
            elif kind == "give":
                out.append((f"gave {{his{subject}}} {OBJECTS[obj]} to {{him{other}}}.", pk, obj))
            elif kind == "say":
                out += [(f'said, "{q}"', pk * pq, obj) for q, pq in _normalize(_zipf(QUOTES))]
            else:  # smile
                out.append((f"smiled at {{him{other}}}." if single else "smiled at each other.", pk, obj))
        return out

    # ---- sampling ---------------------------------------------------------------------------
    def sample(self, rng: random.Random) -> tuple[str, float]:
        """One story and the log2 probability of the derivation that produced it."""
        i = min(bisect.bisect_right(self._intro_cum, rng.random() * self._intro_cum[-1]), len(self.intros) - 1)
        p, text, cast = self.intros[i]
        parts, logp, s = [text], math.log2(p), self.start
        while s >= 0:
            cum = self._edge_cum[s]
            j = min(bisect.bisect_right(cum, rng.random() * cum[-1]), len(cum) - 1)
            e = self.edges[s][j]
            parts.append(e.template.format(**cast))
            logp += math.log2(e.prob)
            s = e.next
        return "".join(parts), logp

    # ---- exact scoring ----------------------------------------------------------------------
    def log2_prob(self, text: str) -> float:
        """log2 p(text) under the grammar, summed over every derivation (-inf if impossible).

        The intro is the text up to its second period (names and kinds hold none); the body is
        scored by the forward algorithm over (state, position)."""
        cut = text.find(".", text.find(".") + 1)
        total = -math.inf
        for p_intro, cast in self._intro_of_text.get(text[:cut + 1], []):
            rendered: dict[int, list[tuple[str, float, int]]] = {}
            memo: dict[tuple[int, int], float] = {}

            def forward(s: int, pos: int) -> float:
                key = (s, pos)
                if key in memo:
                    return memo[key]
                if s not in rendered:
                    rendered[s] = [(e.template.format(**cast), math.log2(e.prob), e.next) for e in self.edges[s]]
                acc = -math.inf
                for piece, lp, nxt in rendered[s]:
                    if text.startswith(piece, pos):
                        end = pos + len(piece)
                        if nxt < 0:
                            rest = 0.0 if end == len(text) else -math.inf
                        else:
                            rest = forward(nxt, end) if end < len(text) else -math.inf
                        acc = float(np.logaddexp2(acc, lp + rest))
                memo[key] = acc
                return acc

            total = float(np.logaddexp2(total, math.log2(p_intro) + forward(self.start, cut + 1)))
        return total

    # ---- entropy ----------------------------------------------------------------------------
    def entropy(self) -> EntropyRate:
        """The exact entropy per story and per byte (closed form; see the module docstring)."""
        h_intro = -sum(p * math.log2(p) for p, _, _ in self.intros)
        assert len(self._intro_of_text) == len(self.intros), "ambiguous grammar: repeated intro text"
        intro_bytes = sum(p * len(t) for p, t, _ in self.intros)
        field_len: dict[str, float] = {}
        for p, _, cast in self.intros:
            for k, v in cast.items():
                field_len[k] = field_len.get(k, 0.0) + p * len(v)
        q = np.zeros((self.n_states, self.n_states))
        h_state = np.zeros(self.n_states)
        bytes_state = np.zeros(self.n_states)
        formatter = string.Formatter()
        for s, edges in enumerate(self.edges):
            for e in edges:
                if e.next >= 0:
                    q[s, e.next] += e.prob
                h_state[s] -= e.prob * math.log2(e.prob)
                length = sum(len(lit) + (field_len[f] if f else 0.0) for lit, f, _, _ in formatter.parse(e.template))
                bytes_state[s] += e.prob * length
        start = np.zeros(self.n_states)
        start[self.start] = 1.0
        visits = np.linalg.solve(np.eye(self.n_states) - q.T, start)
        bits = h_intro + float(visits @ h_state)
        n_bytes = intro_bytes + float(visits @ bytes_state)
        return EntropyRate(bits, n_bytes, bits / n_bytes, bits / (n_bytes + 1))

    def monte_carlo(self, n: int, seed: int = 0) -> dict[str, float]:
        """Monte Carlo estimate of bits per byte from `n` sampled stories, with its standard error
        (ratio estimator, delta method): a check of `entropy()`."""
        rng = random.Random(seed)
        bits, lens = np.empty(n), np.empty(n)
        for i in range(n):
            text, lp = self.sample(rng)
            bits[i], lens[i] = -lp, len(text.encode())
        ratio = bits.mean() / lens.mean()
        se = float(np.std(bits - ratio * lens, ddof=1) / math.sqrt(n) / lens.mean())
        return {"bits_per_byte": float(ratio), "bits_per_byte_stderr": se, "bits_per_story": float(bits.mean()),
                "bytes_per_story": float(lens.mean()), "n": n}


_GRAMMAR: StoryGrammar | None = None


def grammar() -> StoryGrammar:
    """The (stateless, shared) story grammar, built on first use (~0.1 s)."""
    global _GRAMMAR
    if _GRAMMAR is None:
        _GRAMMAR = StoryGrammar()
    return _GRAMMAR


def split_rng(seed: int, split: str) -> random.Random:
    """The random stream of one split: train and validation come from separate seed streams."""
    state = np.random.SeedSequence([int(seed), 0x570, {"train": 0, "val": 1}[split]]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def generate_documents(seed: int, split: str, n_bytes: int) -> list[str]:
    """Stories of `split` ("train" or "val") from `seed`, until they hold at least `n_bytes` bytes.

    Deterministic: the same (seed, split) gives the same stories, and a larger `n_bytes` extends
    the same list."""
    g, rng = grammar(), split_rng(seed, split)
    docs: list[str] = []
    total = 0
    while total < n_bytes:
        text = g.sample(rng)[0]
        docs.append(text)
        total += len(text) + 1
    return docs
