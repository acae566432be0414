"""A character-level LSTM language model (the model behind contextual string embeddings).

Characters -> embedding -> LSTM (``hidden_size`` x ``nlayers``) -> linear decoder over the
characters. A forward model reads text left to right; a backward model reads the reversed text,
so "next character" always means the character in reading order. Callers hand the model text in
natural order: ``encode_text`` reverses it for a backward model.

The character dictionary has ``<unk>`` at index 0 (unseen characters); ``"\\n"`` and ``" "`` are
always in it because they are the boundaries a sentence is read with (see ``boundaries``).

A saved model is a folder: ``config.json`` (architecture + characters) and ``model.safetensors``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.data import Dictionary
from engine.limits import check_built_on_meta
from engine.serialization import (
    ModelFileError,
    atomic_directory,
    check_state_dict,
    load_tensors,
    read_json,
    save_tensors,
    write_json,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
START_MARKER = "\n"  # a sentence is read as START_MARKER + text + END_MARKER
END_MARKER = " "


class LanguageModelError(ValueError):
    """A language model folder, config or argument is invalid; the message says which and why."""


class LanguageModel(nn.Module):
    def __init__(
        self,
        characters: Dictionary | Iterable[str],
        is_forward: bool = True,
        hidden_size: int = 1024,
        nlayers: int = 1,
        embedding_size: int = 100,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if hidden_size < 1 or nlayers < 1 or embedding_size < 1:
            raise LanguageModelError("hidden_size, nlayers and embedding_size must be positive")
        if not 0.0 <= dropout < 1.0:
            raise LanguageModelError(f"dropout must be in [0, 1), got {dropout}")
        chars = characters.get_items() if isinstance(characters, Dictionary) else list(characters)
        self.dictionary = Dictionary(add_unk=True)
        for char in [*chars, START_MARKER, END_MARKER]:
            if char == Dictionary.UNK:
                continue
            if len(char) != 1:
                raise LanguageModelError(f"language model characters must be single characters, got {char!r}")
            if char not in self.dictionary:
                self.dictionary.add_item(char)
        self.is_forward = is_forward
        self.hidden_size = hidden_size
        self.nlayers = nlayers
        self.embedding_size = embedding_size
        self.dropout = dropout

        self.encoder = nn.Embedding(len(self.dictionary), embedding_size)
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.LSTM(embedding_size, hidden_size, nlayers, dropout=dropout if nlayers > 1 else 0.0)
        self.decoder = nn.Linear(hidden_size, len(self.dictionary))
        self._lookup: np.ndarray | None = None

    # characters ----------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    @property
    def direction(self) -> str:
        return "forward" if self.is_forward else "backward"

    def char_ids(self, text: str) -> torch.Tensor:
        """Indices of ``text``'s characters as given (no reversal), unknown ones -> 0."""
        if self._lookup is None:
            top = max(ord(c) for c in self.dictionary.get_items() if c != Dictionary.UNK) + 1
            lookup = np.zeros(top, dtype=np.int64)
            for index, char in enumerate(self.dictionary.get_items()):
                if char != Dictionary.UNK:
                    lookup[ord(char)] = index
            self._lookup = lookup
        codes = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32).astype(
            np.int64
        )
        inside = codes < len(self._lookup)
        ids = np.zeros(len(codes), dtype=np.int64)
        ids[inside] = self._lookup[codes[inside]]
        return torch.from_numpy(ids)

    def encode_text(self, text: str) -> torch.Tensor:
        """``text`` (natural order) as indices in this model's reading order."""
        return self.char_ids(text if self.is_forward else text[::-1])

    # computation ---------------------------------------------------------------------------------
    def init_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.decoder.weight
        shape = (self.nlayers, batch_size, self.hidden_size)
        return weight.new_zeros(shape), weight.new_zeros(shape)

    def encode(
        self, chars: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``chars`` [T, B] -> last layer's states [T, B, H] (state after reading each char)."""
        output, hidden = self.rnn(self.drop(self.encoder(chars)), hidden)
        return output, hidden

    def forward(
        self, chars: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``chars`` [T, B] -> logits of the next character [T, B, V] and the final state."""
        output, hidden = self.encode(chars, hidden)
        return self.decoder(self.drop(output)), hidden

    def states_at(
        self, texts: list[str], positions: list[list[int]], chars_per_chunk: int = 512
    ) -> list[torch.Tensor]:
        """For each string (already in reading order) the states after reading the characters at
        ``positions`` -> one [len(positions[i]), H] tensor per string.

        The batch is read ``chars_per_chunk`` characters at a time, carrying the LSTM state, and
        only the requested positions are kept, so memory grows with the chunk, not the text."""
        if chars_per_chunk < 1:
            raise LanguageModelError(f"chars_per_chunk must be positive, got {chars_per_chunk}")
        device = self.decoder.weight.device
        longest = max((len(t) for t in texts), default=0)
        wanted = [torch.as_tensor(p, dtype=torch.long) for p in positions]
        empty = self.decoder.weight.new_zeros(0, self.hidden_size)
        if longest == 0 or sum(len(w) for w in wanted) == 0:
            return [empty for _ in texts]
        chars = torch.zeros(longest, len(texts), dtype=torch.long)
        for column, text in enumerate(texts):
            chars[: len(text), column] = self.char_ids(text)
        pos = torch.cat(wanted)
        col = torch.cat([torch.full((len(w),), i, dtype=torch.long) for i, w in enumerate(wanted)])
        if int(pos.max()) >= longest or int(pos.min()) < 0:
            raise LanguageModelError("a requested position lies outside its text")

        pieces: list[torch.Tensor] = []
        order: list[torch.Tensor] = []
        hidden: tuple[torch.Tensor, torch.Tensor] | None = None
        last_needed = int(pos.max())
        for start in range(0, last_needed + 1, chars_per_chunk):
            end = min(start + chars_per_chunk, longest)
            output, hidden = self.encode(chars[start:end].to(device), hidden)
            inside = ((pos >= start) & (pos < end)).nonzero().squeeze(1)
            if len(inside):
                pieces.append(output[(pos[inside] - start).to(device), col[inside].to(device)])
                order.append(inside)
        gathered = torch.cat(pieces)[torch.argsort(torch.cat(order)).to(device)]
        return list(gathered.split([len(w) for w in wanted]))

    @torch.no_grad()
    def generate_text(
        self,
        prefix: str = "\n",
        length: int = 200,
        temperature: float = 1.0,
        seed: int | None = None,
    ) -> str:
        """Sample ``length`` characters after ``prefix`` (a backward model samples the text before
        it) and return the whole text in natural order. ``temperature`` < 1 is more conservative."""
        if temperature <= 0:
            raise LanguageModelError(f"temperature must be positive, got {temperature}")
        if length < 0:
            raise LanguageModelError(f"length must be >= 0, got {length}")
        was_training = self.training
        self.eval()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        device = self.decoder.weight.device
        ids = self.encode_text(prefix or START_MARKER).to(device)
        logits, hidden = self(ids.unsqueeze(1))
        sampled: list[str] = []
        items = self.dictionary.get_items()
        for _ in range(length):
            probs = torch.softmax(logits[-1, 0].float().cpu() / temperature, dim=-1)
            probs[0] = 0.0  # never emit <unk>
            index = int(torch.multinomial(probs, 1, generator=generator))
            sampled.append(items[index])
            logits, hidden = self(torch.tensor([[index]], device=device), hidden)
        self.train(was_training)
        text = "".join(sampled)
        return prefix + text if self.is_forward else text[::-1] + prefix

    # persistence ---------------------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            "is_forward": self.is_forward,
            "hidden_size": self.hidden_size,
            "nlayers": self.nlayers,
            "embedding_size": self.embedding_size,
            "dropout": self.dropout,
            "characters": [c for c in self.dictionary.get_items() if c != Dictionary.UNK],
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LanguageModel:
        """An untrained model with the architecture and characters of ``config``."""
        if not isinstance(config, dict):
            raise LanguageModelError(
                f"a language model config must be a JSON object, got {type(config).__name__}"
            )
        if config.get("class", cls.__name__) != cls.__name__:
            raise LanguageModelError(f"config describes a {config.get('class')!r}, not a {cls.__name__}")
        version = config.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise LanguageModelError(f"unsupported language model format_version {version!r}")
        chars = config.get("characters")
        if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
            raise LanguageModelError("language model config needs 'characters', a list of characters")
        try:
            return cls(
                chars,
                is_forward=bool(config["is_forward"]),
                hidden_size=int(config["hidden_size"]),
                nlayers=int(config.get("nlayers", 1)),
                embedding_size=int(config.get("embedding_size", 100)),
                dropout=float(config.get("dropout", 0.1)),
            )
        except KeyError as error:
            raise LanguageModelError(f"language model config misses {error.args[0]!r}") from None

    def save(self, directory: str | Path) -> Path:
        """Write the model folder atomically (a complete folder replaces any old one)."""
        directory = Path(directory)
        with atomic_directory(directory) as staging:
            save_tensors(staging / WEIGHTS_FILE, self.state_dict(), metadata={"format": "pt"})
            write_json(staging / CONFIG_FILE, self.to_config())
        return directory

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device | None = None, untrusted: bool = False
    ) -> LanguageModel:
        """Load a saved model (in eval mode). A missing or foreign folder raises
        LanguageModelError; malformed files raise ``engine.serialization.ModelFileError``.

        ``untrusted`` (an uploaded folder): the model is first built on PyTorch's meta device,
        which allocates nothing, and checked against the weights file's header
        (``engine.limits.check_built_on_meta``): a config could otherwise ask for any
        ``hidden_size`` and ``nlayers``, and building that model would take the memory first."""
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise LanguageModelError(f"{directory} is not a language model folder: missing {name}")
        config = read_json(directory / CONFIG_FILE)
        if untrusted:
            check_built_on_meta(
                lambda: cls.from_config(config), directory / CONFIG_FILE, directory / WEIGHTS_FILE
            )
        model = cls.from_config(config)
        weights = load_tensors(directory / WEIGHTS_FILE, require_finite=untrusted)
        check_state_dict(directory / WEIGHTS_FILE, model.state_dict(), weights)
        model.load_state_dict(weights)
        model.eval()
        return model.to(device) if device is not None else model

    def extra_repr(self) -> str:
        return f"direction={self.direction}, chars={self.vocab_size}"


def is_language_model_folder(directory: str | Path) -> bool:
    directory = Path(directory)
    if not (directory / CONFIG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        return False
    try:
        config = read_json(directory / CONFIG_FILE)
    except ModelFileError:
        return False
    return config.get("class") == LanguageModel.__name__
