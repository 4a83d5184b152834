"""Answer: retrieve, prompt from a versioned template, stream from a provider, validate.

The stream is: the retrieved context; answer text deltas (a Reset discards
them when a provider fails mid-answer and the next one starts over); the
final answer with per-sentence citations and the grounding check.

Without a usable provider the answer is extractive (quoted sentences, cited,
and saying so) unless the caller disallowed that: then FAILED_PRECONDITION
when none is configured, UNAVAILABLE when all failed. When no chunk meets
`min_relevance`, no provider is called and the answer says the knowledge
base has no sufficient evidence.

LLM tokens are metered here, for the caller's tenant, per attempt (failed
ones too: providers bill what they processed), as `llm_input_tokens` and
`llm_output_tokens` under "provider/model", from the usage each provider
reports; the extractive path uses none. A tenant at its daily LLM token quota
is refused (RESOURCE_EXHAUSTED) before anything is retrieved, when a provider
would be asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from services.common.caller import Caller
from services.common.errors import Conflict, FieldViolation, Invalid, Unavailable
from services.common.hourly_usage import LLM_INPUT_TOKENS, LLM_OUTPUT_TOKENS, HourlyMeter
from services.common.runtime.quotas import LLM_TOKENS_PER_DAY, UsageQuotas
from services.rag.citations import CitedSource, Validation, validate
from services.rag.context import PatientContext
from services.rag.extractive import Passage, extractive_answer
from services.rag.indexing import EVIDENCE_NAMES
from services.rag.prompts import PromptTemplate, get_template
from services.rag.providers.base import CompletionRequest, Provider
from services.rag.providers.fallback import Attempt, Completed, Delta, Reset, generate
from services.rag.retrieval import RetrievalOutcome, RetrievalQuery, Retrieved, Retriever
from services.rag.store import KnowledgeStore

INSUFFICIENT = (
    "The knowledge base has no sufficient evidence to answer this question: no passage met "
    "the minimum relevance."
)
DEFAULT_MAX_OUTPUT_TOKENS = 1024


@dataclass(frozen=True)
class AnswerQuery:
    retrieval: RetrievalQuery
    providers: tuple[str, ...] = ()
    template: str = ""
    template_version: str = ""
    max_output_tokens: int = 0
    temperature: float | None = None
    allow_extractive: bool = True


@dataclass(frozen=True)
class ContextReady:
    outcome: RetrievalOutcome


@dataclass
class AnswerResult:
    text: str
    validation: Validation
    results: list[Retrieved]
    template: PromptTemplate
    provider: str = ""
    model: str = ""
    extractive: bool = False
    fallback_reason: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    insufficient_evidence: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Answerer:
    def __init__(
        self,
        retriever: Retriever,
        store: KnowledgeStore,
        providers: Sequence[Provider],
        *,
        meter: HourlyMeter | None = None,
        quotas: UsageQuotas | None = None,
    ) -> None:
        self._retriever = retriever
        self._store = store
        self._meter = meter
        self._quotas = quotas
        self._providers = {p.name: p for p in providers}
        self._order = [p.name for p in providers]

    def _chosen(self, names: tuple[str, ...]) -> list[Provider]:
        unknown = [
            FieldViolation(
                f"providers[{i}]",
                f"{n!r} is not a configured provider; configured: "
                f"{', '.join(self._order) or '(none)'}",
            )
            for i, n in enumerate(names)
            if n not in self._providers
        ]
        if unknown:
            raise Invalid(unknown)
        return [self._providers[n] for n in (names or self._order)]

    async def answer(
        self, caller: Caller, q: AnswerQuery
    ) -> AsyncIterator[ContextReady | Delta | Reset | AnswerResult]:
        providers = self._chosen(q.providers)
        template = get_template(q.template, q.template_version)
        if providers and self._quotas is not None:
            await self._quotas.check(caller.tenant_id, LLM_TOKENS_PER_DAY)
        outcome = await self._retriever.retrieve(caller, q.retrieval)
        yield ContextReady(outcome)
        results = outcome.results
        if not results:
            yield Delta(INSUFFICIENT)
            yield AnswerResult(
                INSUFFICIENT, validate(INSUFFICIENT, []), [], template, insufficient_evidence=True
            )
            return
        result = AnswerResult("", Validation([], [], []), results, template)
        fallback_reason = "no provider configured"
        if providers:
            system, user = template.render(
                question=q.retrieval.query,
                passages=_passages(results),
                patient=_patient_lines(outcome.resolved_context),
            )
            request = CompletionRequest(
                system=system,
                user=user,
                max_tokens=q.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
                temperature=q.temperature if q.temperature is not None else template.temperature,
            )
            async for event in generate(providers, request):
                if isinstance(event, Attempt):
                    result.attempts.append(event)
                    self._meter_tokens(caller.tenant_id, event)
                elif isinstance(event, Completed):
                    result.text, result.provider, result.model = (
                        event.text,
                        event.provider,
                        event.model,
                    )
                    result.prompt_tokens = event.prompt_tokens
                    result.completion_tokens = event.completion_tokens
                else:
                    yield event
            fallback_reason = "every provider failed: " + "; ".join(
                f"{a.provider} {a.outcome}" for a in result.attempts
            )
        if not result.provider:
            if not q.allow_extractive:
                if not providers:
                    raise Conflict(
                        "no LLM provider is configured (HACS_LLM_PROVIDERS) and "
                        "allow_extractive_fallback is false",
                        subject="providers",
                    )
                raise Unavailable(fallback_reason)
            sentences = extractive_answer(
                q.retrieval.query,
                [
                    Passage(i, r.chunk.text, r.relevance, frozenset(r.chunk.section_path))
                    for i, r in enumerate(results, start=1)
                ],
            )
            for position, sentence in enumerate(sentences):
                yield Delta(sentence if position == 0 else " " + sentence)
            result.text = " ".join(sentences)
            result.provider, result.extractive = "extractive", True
            result.fallback_reason = fallback_reason
        result.validation = validate(result.text, await self._sources(results))
        yield result

    def _meter_tokens(self, tenant_id: str, attempt: Attempt) -> None:
        if self._meter is None:
            return
        dimension = f"{attempt.provider}/{attempt.model}"
        self._meter.add(tenant_id, LLM_INPUT_TOKENS, dimension, attempt.prompt_tokens)
        self._meter.add(tenant_id, LLM_OUTPUT_TOKENS, dimension, attempt.completion_tokens)

    async def _sources(self, results: list[Retrieved]) -> list[CitedSource]:
        """The retrieved chunks by marker, each checked to still exist now."""
        keys = [(r.chunk.knowledge_base_id, r.chunk.document_id, r.chunk.id) for r in results]
        tenant_id = results[0].chunk.tenant_id
        async with self._store.transaction(tenant_id) as tx:
            existing = await tx.chunks(keys)
        return [
            CitedSource(i, r.chunk.text, key in existing, frozenset(r.chunk.section_path))
            for i, (r, key) in enumerate(zip(results, keys, strict=True), start=1)
        ]


def _passages(results: list[Retrieved]) -> list[dict[str, object]]:
    passages: list[dict[str, object]] = []
    for i, r in enumerate(results, start=1):
        about = [p for p in (r.document.publication_date,) if p]
        if r.document.evidence_level in EVIDENCE_NAMES:
            about.append(f"evidence: {EVIDENCE_NAMES[r.document.evidence_level]}")
        heading = r.document.title
        if r.chunk.section_path:
            heading += " — " + " > ".join(r.chunk.section_path)
        if about:
            heading += f" ({', '.join(about)})"
        passages.append({"index": i, "heading": heading, "text": r.chunk.text})
    return passages


def _patient_lines(context: PatientContext) -> list[str]:
    lines: list[str] = []
    if context.HasField("age"):
        lines.append(f"age: {context.age}")
    if context.sex:
        lines.append(f"sex: {context.sex}")
    for label, concepts in (
        ("condition", context.conditions),
        ("medication", context.medications),
        ("allergy", context.allergies),
    ):
        for c in concepts:
            text = c.text or next((x.display or x.code for x in c.coding), "")
            if text:
                lines.append(f"{label}: {text}")
    if context.notes:
        lines.append(f"notes: {context.notes}")
    return lines
