"""Protobuf messages <-> memory domain objects. Mapping only, no rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from hacs.memory.v1 import consolidation_pb2 as cpb
from hacs.memory.v1 import memory_service_pb2 as pb
from hacs.memory.v1 import recall_pb2

from services.memory.clustering import Clustering, ClusterParams
from services.memory.consolidation import (
    ConsolidationOutcome,
    ConsolidationProgress,
    Event,
    FoundContradiction,
    MergedGroup,
)
from services.memory.duplicates import Thresholds
from services.memory.ranking import Weights
from services.memory.recall import Recalled


def when(message: Message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value


def weights(message: recall_pb2.RecallWeights) -> Weights:
    default = Weights()
    return Weights(
        semantic=message.semantic if message.HasField("semantic") else default.semantic,
        lexical=message.lexical if message.HasField("lexical") else default.lexical,
        recency=message.recency if message.HasField("recency") else default.recency,
        importance=message.importance if message.HasField("importance") else default.importance,
    )


def weights_message(value: Weights) -> recall_pb2.RecallWeights:
    return recall_pb2.RecallWeights(
        semantic=value.semantic,
        lexical=value.lexical,
        recency=value.recency,
        importance=value.importance,
    )


def half_lives(items: list[recall_pb2.RecencyHalfLife]) -> dict[int, timedelta]:
    return {item.memory_type: item.half_life.ToTimedelta() for item in items}


def recall_result(found: Recalled) -> recall_pb2.RecallResult:
    s = found.scores
    return recall_pb2.RecallResult(
        memory=found.record,
        scores=recall_pb2.RecallScores(
            semantic=s.semantic,
            lexical=s.lexical,
            recency=s.recency,
            importance=s.importance,
            final_score=s.final,
        ),
    )


def thresholds(message: cpb.ConsolidationThresholds) -> Thresholds:
    default = Thresholds()
    return Thresholds(
        embedding_similarity=message.embedding_similarity
        if message.HasField("embedding_similarity")
        else default.embedding_similarity,
        lexical_overlap=message.lexical_overlap
        if message.HasField("lexical_overlap")
        else default.lexical_overlap,
        max_group_size=message.max_group_size or default.max_group_size,
    )


def consolidate_event(event: Event) -> pb.ConsolidateResponse:
    if isinstance(event, ConsolidationProgress):
        return pb.ConsolidateResponse(
            progress=cpb.ConsolidationProgress(
                stage=event.stage,  # type: ignore[arg-type]
                processed=event.processed,
                total=event.total,
                groups_found=event.groups,
                contradictions_found=event.contradictions,
            )
        )
    if isinstance(event, MergedGroup):
        return pb.ConsolidateResponse(
            group=cpb.MergeGroup(
                group_id=event.number,
                source_memories=event.sources,
                merged_memory=event.merged,
                min_similarity=event.min_similarity,
                mean_similarity=event.mean_similarity,
            )
        )
    if isinstance(event, FoundContradiction):
        return pb.ConsolidateResponse(
            contradiction=cpb.Contradiction(
                memories=event.memories,
                similarity=event.similarity,
                facts=[
                    cpb.ConflictingFact(
                        attribute=attribute,
                        values=[cpb.FactValue(memory=m, value=v, text=t) for m, v, t in values],
                    )
                    for attribute, values in event.facts
                ],
            )
        )
    assert isinstance(event, ConsolidationOutcome)
    duration = Duration()
    duration.FromTimedelta(timedelta(seconds=event.seconds))
    return pb.ConsolidateResponse(
        result=cpb.ConsolidationResult(
            dry_run=event.dry_run,
            blocks_scanned=event.scanned,
            groups=event.groups,
            blocks_merged=event.merged,
            blocks_removed=event.merged - event.groups,
            contradictions=event.contradictions,
            duration=duration,
        )
    )


def cluster_params(message: cpb.ClusterParams) -> ClusterParams:
    default = ClusterParams()
    return ClusterParams(
        num_clusters=message.num_clusters,
        distance_threshold=message.distance_threshold
        if message.HasField("distance_threshold")
        else default.distance_threshold,
        linkage=message.linkage or default.linkage,
        min_cluster_size=message.min_cluster_size or default.min_cluster_size,
        min_samples=message.min_samples,
        label_terms=message.label_terms or default.label_terms,
    )


def cluster_response(result: Clustering) -> pb.ClusterResponse:
    return pb.ClusterResponse(
        clusters=[
            cpb.MemoryCluster(
                cluster_id=c.number,
                label=c.label,
                label_terms=[cpb.LabelTerm(term=t, weight=w) for t, w in c.terms],
                members=c.members,
                representative=c.representative,
                cohesion=c.cohesion,
            )
            for c in result.clusters
        ],
        noise=result.noise,
        method=result.method,  # type: ignore[arg-type]
        memory_count=result.count,
    )
