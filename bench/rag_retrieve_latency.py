"""RagService.Retrieve latency through Envoy: 50 concurrent clients, complex clinical questions.

1. `hacs serve` (tenant, records, embedding, search, rag: SQLite, Milvus Lite +
   the SQLite lexical store, the shipped all-MiniLM-L6-v2 on this machine's CPU) with Envoy in
   front (config rendered by mesh/envoy/render.py), on free ports, as
   bench/search_latency.py starts them.
2. One knowledge base, filled through IngestDocuments via Envoy (4 streams):
   the guideline corpus of tests/data/rag (Markdown, HTML, text and a PDF)
   plus a seeded sample of MedQuAD answers (../shared/data/medquad) for
   volume, each with a tag for its source, an evidence level and a
   publication date (assigned from a hash of its id) so filters have
   something to cut. Ingest time and chunk count are reported.
3. Five patients written through RecordService (Patient, Conditions,
   MedicationStatements), so half of the calls can name a patient record.
4. For a fixed time, 50 clients call Retrieve back to back (top_k 10,
   min_relevance 0.3). Every call is a long clinical question (two or three
   sentences) with a patient context: half inline (age, sex, coded
   conditions and medications, notes), half by patient record name (its
   compartment is read with the caller's permissions); half of the calls
   also carry a filter (tags, evidence levels, published_after, or all of
   these). Query embedding, dense + BM25 candidates, the chunk and document
   reads, context re-ranking and calibration are all in the measured call.

Prints p50/p95/p99, calls/s, errors, the service's memory and CPU, and
every parameter; --json FILE writes them.

    .venv/bin/python bench/rag_retrieve_latency.py                    # the defaults
    .venv/bin/python bench/rag_retrieve_latency.py --medquad-documents 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hacs.client import HacsClient
from hacs.common.v1 import datatypes_pb2
from hacs.rag.v1 import knowledge_pb2, patient_context_pb2
from hacs.rag.v1 import rag_service_pb2 as pb
from hacs.records.v1 import evidence_pb2, record_pb2
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.tenant.v1 import tenant_pb2
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from bench.support.all_in_one import AllInOne
from bench.support.measure import memory_of, run_clients
from tests.data.rag.corpus import CORPUS
from tests.data.rag.corpus import document_requests as guideline_requests
from tests.support import clinical

ROOT = Path(__file__).resolve().parents[1]
MEDQUAD = ROOT.parent / "shared" / "data" / "medquad"
TENANT = "bench"
KB = f"tenants/{TENANT}/knowledgeBases/guidelines"
EL = evidence_pb2.EvidenceLevel
SNOMED, RXNORM = clinical.SNOMED, clinical.RXNORM

QUESTIONS = (
    "A 74-year-old woman with type 2 diabetes and stage 4 chronic kidney disease (eGFR 24 "
    "mL/min/1.73m2) still takes metformin 1000 mg twice daily. Should metformin be reduced or "
    "stopped at this level of renal function, and which glucose-lowering drugs are preferred "
    "instead?",
    "What anticoagulant is recommended for stroke prevention in an 81-year-old man with "
    "non-valvular atrial fibrillation, a CHA2DS2-VASc score of 5, body weight 58 kg and serum "
    "creatinine 1.6 mg/dL? When is an apixaban dose reduction indicated?",
    "For an adult with hypertension and diabetes whose clinic blood pressure stays above "
    "140/90 mmHg on an ACE inhibitor, what blood pressure target should we aim for and which "
    "drug class should be added next?",
    "A 9-year-old child with asthma uses a reliever inhaler more than twice a week and wakes "
    "at night with symptoms despite a low-dose inhaled corticosteroid. What is the next step "
    "of asthma therapy, and when should we step down again?",
    "What are the treatment options for adult acute lymphoblastic leukemia that has relapsed "
    "after chemotherapy, and how do targeted therapy and stem cell transplant compare?",
    "My father has glaucoma and takes a beta blocker for heart failure. What are the symptoms "
    "that glaucoma is getting worse, and could his eye drops interact with his heart "
    "medicines?",
    "What causes chronic kidney disease in people with long-standing high blood pressure and "
    "diabetes, and how is it diagnosed and staged with eGFR and urine albumin tests?",
    "How should a pregnant woman with gestational diabetes be monitored and treated, and "
    "which insulin regimens or oral medicines are considered safe during pregnancy?",
    "An elderly patient on warfarin for atrial fibrillation develops pneumonia and starts "
    "antibiotics. Which interactions and bleeding risks matter, and how often should the INR "
    "be checked?",
    "What are the genetic causes, inheritance pattern and symptoms of cystic fibrosis, and "
    "which treatments improve lung function in adults with the disease?",
)


def concept(system: str, code: str, display: str) -> datatypes_pb2.CodeableConcept:
    return clinical.concept(system, code, display)


@dataclass(frozen=True)
class Person:
    """A patient: inline as a PatientContext, and written as records for the by-name calls."""

    record_id: str
    birth_date: str
    sex: str
    conditions: tuple[tuple[str, str], ...]  # SNOMED code, display
    medications: tuple[tuple[str, str], ...]  # RxNorm code, display
    notes: str

    def inline(self) -> patient_context_pb2.PatientContext:
        return patient_context_pb2.PatientContext(
            age=date.today().year - int(self.birth_date[:4]),
            sex=self.sex,
            conditions=[concept(SNOMED, c, d) for c, d in self.conditions],
            medications=[concept(RXNORM, c, d) for c, d in self.medications],
            notes=self.notes,
        )


PEOPLE = (
    Person("renal", "1951-02-11", "female",
           (("709044004", "Chronic kidney disease"), ("44054006", "Diabetes mellitus type 2")),
           (("6809", "metformin"), ("29046", "lisinopril")), "eGFR 24 last month"),
    Person("af", "1944-07-30", "male",
           (("49436004", "Atrial fibrillation"), ("38341003", "Hypertensive disorder")),
           (("1364430", "apixaban"), ("17767", "amlodipine")), "weight 58 kg, creatinine 1.6"),
    Person("asthma", "2016-05-02", "female", (("195967001", "Asthma"),),
           (("435", "albuterol"), ("1347", "beclomethasone")), "night symptoms twice a week"),
    Person("pregnant", "1991-10-19", "female", (("11687002", "Gestational diabetes mellitus"),),
           (("5856", "insulin"),), "pregnant, 28 weeks"),
    Person("heart", "1958-03-08", "male",
           (("84114007", "Heart failure"), ("23986001", "Glaucoma")),
           (("6918", "metoprolol"), ("10600", "timolol")), "ejection fraction 35%"),
)  # fmt: skip

FILTERS = (
    pb.RetrievalFilter(
        tags=["diabetes", "cardiovascular", "source:niddk", "source:nhlbi", "source:cdc"]
    ),
    pb.RetrievalFilter(evidence_levels=[EL.EVIDENCE_LEVEL_HIGH, EL.EVIDENCE_LEVEL_MODERATE]),
    pb.RetrievalFilter(published_after="2020-01-01"),
    pb.RetrievalFilter(
        tags=["diabetes", "renal", "source:niddk", "source:mplushealthtopics"],
        evidence_levels=[EL.EVIDENCE_LEVEL_HIGH, EL.EVIDENCE_LEVEL_MODERATE],
        published_after="2018",
    ),
)


# -- the platform ----------------------------------------------------------------------


async def create_tenant(edge: str, data_dir: Path) -> str:
    key = (data_dir / "operator.key").read_text().strip()
    async with HacsClient(edge, api_key=key) as operator:
        for _ in range(60):  # Envoy fetches the JWKS in the background at start
            try:
                reply = await operator.tenant.CreateTenant(
                    tpb.CreateTenantRequest(
                        tenant_id=TENANT,
                        tenant=tenant_pb2.Tenant(
                            display_name="RAG benchmark",
                            plan=tenant_pb2.PLAN_ENTERPRISE,
                            limits=tenant_pb2.TenantLimits(calls_per_minute=100_000_000),
                        ),
                        admin=tenant_pb2.Actor(display_name="Bench"),
                    )
                )
                return reply.admin_api_key.secret
            except Exception:
                await asyncio.sleep(0.5)
    raise RuntimeError("could not create the benchmark tenant")


# -- the knowledge base ----------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One MedQuAD answer as a knowledge document."""

    id: str
    title: str
    text: str
    source: str


def medquad_sample(directory: Path, count: int, seed: int) -> list[Answer]:
    """`count` answers drawn with a seed from every source (ids repeated in the file once)."""
    if count <= 0 or not (directory / "corpus.jsonl").is_file():
        return []
    seen: dict[str, Answer] = {}
    with (directory / "corpus.jsonl").open() as f:
        for line in f:
            item = json.loads(line)
            doc_id = str(item["_id"])
            if doc_id not in seen and str(item.get("text") or "").strip():
                source = str((item.get("metadata") or {}).get("source") or "medquad")
                seen[doc_id] = Answer(
                    doc_id, str(item.get("title") or doc_id), item["text"], source
                )
    answers = sorted(seen.values(), key=lambda a: a.id)
    return random.Random(seed).sample(answers, min(count, len(answers)))


def _stable(text: str, modulo: int) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % modulo


def answer_requests(answer: Answer) -> Iterator[pb.IngestDocumentsRequest]:
    content = answer.text.encode()
    doc_id = "mq-" + hashlib.sha256(answer.id.encode()).hexdigest()[:16]
    yield pb.IngestDocumentsRequest(
        header=pb.DocumentHeader(
            document_id=doc_id,
            total_bytes=len(content),
            document=knowledge_pb2.Document(
                title=answer.title,
                mime_type="text/plain",
                tags=[f"source:{answer.source.lower()}"],
                evidence_level=1 + _stable(answer.id, 4),  # type: ignore[arg-type]
                publication_date=f"{2012 + _stable(answer.id + 'y', 13)}-06",
            ),
        )
    )
    yield pb.IngestDocumentsRequest(data=pb.DocumentData(content=content))
    yield pb.IngestDocumentsRequest(end=pb.DocumentEnd())


async def _requests(
    parts: list[Iterator[pb.IngestDocumentsRequest]],
) -> AsyncIterator[pb.IngestDocumentsRequest]:
    yield pb.IngestDocumentsRequest(config=pb.IngestConfig(knowledge_base=KB))
    for part in parts:
        for request in part:
            yield request


async def build_knowledge_base(
    client: HacsClient, answers: list[Answer], streams: int
) -> dict[str, Any]:
    await client.rag.CreateKnowledgeBase(
        pb.CreateKnowledgeBaseRequest(
            parent=f"tenants/{TENANT}",
            knowledge_base_id="guidelines",
            knowledge_base=knowledge_pb2.KnowledgeBase(display_name="Guidelines and answers"),
        )
    )
    documents: list[Iterator[pb.IngestDocumentsRequest]] = [
        guideline_requests(doc) for doc in CORPUS
    ]
    documents += [answer_requests(a) for a in answers]
    total = len(documents)
    summaries: list[pb.IngestSummary] = []
    done = 0
    started = time.perf_counter()
    shown = started

    async def stream(share: list[Iterator[pb.IngestDocumentsRequest]]) -> None:
        nonlocal done, shown
        call = client.rag.IngestDocuments(_requests(share), timeout=24 * 3600)
        async for response in call:
            if response.HasField("outcome"):
                done += 1
                now = time.perf_counter()
                if now - shown >= 30 or done == total:
                    shown = now
                    print(
                        f"  ingested {done:,}/{total:,} documents in {now - started:,.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            elif response.HasField("summary"):
                summaries.append(response.summary)

    await asyncio.gather(*(stream(documents[i::streams]) for i in range(streams)))
    seconds = time.perf_counter() - started
    return {
        "guideline_documents": len(CORPUS),
        "medquad_documents": len(answers),
        "ingested": sum(s.ingested for s in summaries),
        "rejected": sum(s.rejected for s in summaries),
        "chunks": sum(s.chunks_added for s in summaries),
        "ingest_seconds": round(seconds, 1),
        "ingest_streams": streams,
    }


async def write_patients(client: HacsClient) -> dict[str, str]:
    """Each person as a Patient with Conditions and MedicationStatements; record id -> name."""
    names: dict[str, str] = {}
    parent = f"tenants/{TENANT}"
    for person in PEOPLE:
        given, family = person.record_id.title(), "Bench"
        patient = await client.records.CreateRecord(
            rpb.CreateRecordRequest(
                parent=parent,
                record_id=person.record_id,
                record=clinical.patient(family, given, person.sex, person.birth_date),
            )
        )
        name = patient.record.name
        requests = []
        for code, display in person.conditions:
            condition = clinical.condition(name, code, display)
            del condition.condition.code.coding[1:]  # the helper adds a diabetes ICD-10 code
            requests.append(rpb.CreateRecordRequest(record=condition))
        for code, display in person.medications:
            record = record_pb2.Record()
            record.medication_statement.status = "active"
            record.medication_statement.medication_codeable_concept.CopyFrom(
                concept(RXNORM, code, display)
            )
            record.medication_statement.subject.reference = name
            requests.append(rpb.CreateRecordRequest(record=record))
        await client.records.BatchCreateRecords(
            rpb.BatchCreateRecordsRequest(parent=parent, requests=requests)
        )
        names[person.record_id] = name
    return names


# -- the measurement -------------------------------------------------------------------


def retrieve_request(i: int, rng: random.Random, patients: dict[str, str]) -> pb.RetrieveRequest:
    """Call i: a long question, a patient (inline on even calls, by name on odd), maybe a filter."""
    person = PEOPLE[rng.randrange(len(PEOPLE))]
    request = pb.RetrieveRequest(
        parent=f"tenants/{TENANT}",
        knowledge_bases=[KB],
        query=QUESTIONS[rng.randrange(len(QUESTIONS))],
        top_k=10,
        min_relevance=0.3,
    )
    if i % 2 == 0:
        request.patient_context.CopyFrom(person.inline())
    else:
        request.patient_context.patient = patients[person.record_id]
        request.patient_context.notes = person.notes
    if rng.random() < 0.5:
        request.filter.CopyFrom(FILTERS[rng.randrange(len(FILTERS))])
    return request


async def measure(
    service: AllInOne,
    key: str,
    patients: dict[str, str],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    seed: int,
) -> dict[str, Any]:
    rng = random.Random(seed)
    returned: list[int] = []
    async with HacsClient(service.edge, api_key=key, default_timeout=60) as client:

        async def call(i: int) -> None:
            reply = await client.rag.Retrieve(retrieve_request(i, rng, patients))
            returned.append(len(reply.results))

        result = await run_clients(
            "RagService.Retrieve (complex clinical question, patient context, filters)",
            call,
            clients=clients,
            seconds=seconds,
            warmup=warmup,
            service_pid=service.pid,
            platform_pids=service.platform_pids,
        )
    result["memory_mib"] = memory_of(service.pid)
    result["mean_results_per_call"] = round(sum(returned) / max(len(returned), 1), 2)
    return result


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--medquad-documents",
        type=int,
        default=1000,
        help="MedQuAD answers added to the guideline corpus (0: the guidelines only)",
    )
    parser.add_argument("--medquad", type=Path, default=MEDQUAD, help="the MedQuAD BEIR directory")
    parser.add_argument("--streams", type=int, default=4, help="concurrent ingest streams")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    run_dir = Path(tempfile.mkdtemp(prefix="hacs-rag-bench-"))
    service = AllInOne(run_dir, run_dir / "data", "tenant,records,embedding,search,rag")
    answers = medquad_sample(args.medquad, args.medquad_documents, args.seed)
    if args.medquad_documents and not answers:
        print(f"note: {args.medquad} not found; guideline corpus only", file=sys.stderr)
    figures: dict[str, Any] = {
        "parameters": vars(args)
        | {
            "medquad": str(args.medquad),
            "json": str(args.json),
            "top_k": 10,
            "min_relevance": 0.3,
            "call_mix": "every call: one of 10 long questions + a patient context (even calls "
            "inline: age, sex, coded conditions and medications, notes; odd calls: a patient "
            "record name + notes); half the calls: one of 4 filters (tags / evidence levels / "
            "published_after / all three)",
            "cores": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "run_dir": str(run_dir),
        }
    }
    try:
        service.start()
        key = await create_tenant(service.edge, service.data_dir)
        async with HacsClient(service.edge, api_key=key, default_timeout=300) as client:
            print(
                f"ingesting {len(CORPUS)} guidelines + {len(answers):,} MedQuAD answers ...",
                file=sys.stderr,
            )
            figures["knowledge_base"] = await build_knowledge_base(client, answers, args.streams)
            patients = await write_patients(client)
        print(f"measuring with {args.clients} clients ...", file=sys.stderr)
        figures["retrieve"] = await measure(
            service,
            key,
            patients,
            clients=args.clients,
            seconds=args.seconds,
            warmup=args.warmup,
            seed=args.seed,
        )
    finally:
        service.stop()
    kb, result = figures["knowledge_base"], figures["retrieve"]
    print(json.dumps(kb))
    print(
        f"Retrieve, {args.clients} clients through Envoy, {kb['chunks']:,} chunks: "
        f"p50 {result['p50_ms']} ms  p95 {result['p95_ms']} ms  p99 {result['p99_ms']} ms  "
        f"{result['calls_per_second']} calls/s  errors {result['errors']}  "
        f"service RSS {result['memory_mib']['rss_mib']} MiB "
        f"(peak {result['memory_mib']['peak_rss_mib']} MiB)"
    )
    print(json.dumps(result["cpu"]))
    print(json.dumps(figures["parameters"]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
