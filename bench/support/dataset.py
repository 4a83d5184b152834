"""The benchmark tenant's data: Patients, then Observations that reference them.

Everything is a pure function of (patient index, seed), so a loader can build
any batch on its own and a reader can name any record without asking the
server: patient n is `patients/p{n:07d}`, its j-th observation
`observations/o{n:07d}-{j}`.

Shape, chosen so every List filter has something to find:
* every 10th patient and its observations carry the label cohort=diabetes
  (10 % of records), every 1,000th also trial=hba1c-2024 (0.1 %);
* observation codes are real LOINC codes with a skewed mix (HbA1c the most
  common, cholesterol the rarest), see OBSERVATION_CODES;
* clinical times are spread uniformly over 2015-2024.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hacs.records.v1 import record_pb2
from hacs.records.v1 import record_service_pb2 as pb

from tests.support import clinical

FIRST_DAY = datetime(2015, 1, 1, tzinfo=UTC)
DAYS = 3652  # 2015-01-01 .. 2024-12-31


@dataclass(frozen=True)
class ObservationCode:
    code: str
    display: str
    unit: str
    low: float
    high: float
    weight: int  # relative frequency


OBSERVATION_CODES = (
    ObservationCode("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 11.0, 40),
    ObservationCode("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 220, 30),
    ObservationCode("8480-6", "Systolic blood pressure", "mm[Hg]", 95, 180, 15),
    ObservationCode("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", 17, 42, 14),
    ObservationCode("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120, 300, 1),
)
COMMON_CODE = OBSERVATION_CODES[0]
RARE_CODE = OBSERVATION_CODES[-1]

FAMILY = ("Garcia", "Smith", "Nguyen", "Okafor", "Kowalski", "Haddad", "Tanaka", "Silva")
GIVEN = {"female": ("Maria", "Aisha", "Mei", "Olga"), "male": ("John", "Omar", "Kenji", "Luis")}


def patient_id(n: int) -> str:
    return f"p{n:07d}"


def observation_id(n: int, j: int) -> str:
    return f"o{n:07d}-{j}"


def labels_of(n: int) -> dict[str, str]:
    labels = {}
    if n % 10 == 0:
        labels["cohort"] = "diabetes"
    if n % 1000 == 0:
        labels["trial"] = "hba1c-2024"
    return labels


def _rng(seed: int, n: int) -> random.Random:
    return random.Random(seed * 1_000_003 + n)


def patient_record(n: int, seed: int) -> record_pb2.Record:
    rng = _rng(seed, n)
    gender = rng.choice(("female", "male"))
    birth = FIRST_DAY - timedelta(days=rng.randrange(18 * 365, 95 * 365))
    record = clinical.patient(
        rng.choice(FAMILY), rng.choice(GIVEN[gender]), gender, birth.date().isoformat()
    )
    record.labels.update(labels_of(n))
    return record


def observation_record(n: int, j: int, patient_name: str, seed: int) -> record_pb2.Record:
    rng = _rng(seed, n * 101 + j + 1)
    kind = rng.choices(OBSERVATION_CODES, weights=[c.weight for c in OBSERVATION_CODES])[0]
    when = FIRST_DAY + timedelta(seconds=rng.randrange(DAYS * 86400))
    value = round(rng.uniform(kind.low, kind.high), 1)
    record = clinical.hba1c(patient_name, value, when)
    if kind is not COMMON_CODE:
        obs = record.observation
        obs.code.CopyFrom(clinical.concept(clinical.LOINC, kind.code, kind.display))
        obs.value_quantity.unit = obs.value_quantity.code = kind.unit
    record.labels.update(labels_of(n))
    return record


def patient_batches(
    tenant_id: str, patients: int, batch_size: int, seed: int
) -> Iterator[pb.BatchCreateRecordsRequest]:
    parent = f"tenants/{tenant_id}"
    for start in range(0, patients, batch_size):
        yield pb.BatchCreateRecordsRequest(
            parent=parent,
            requests=[
                pb.CreateRecordRequest(record_id=patient_id(n), record=patient_record(n, seed))
                for n in range(start, min(start + batch_size, patients))
            ],
        )


def observation_batches(
    tenant_id: str, patients: int, per_patient: int, batch_size: int, seed: int
) -> Iterator[pb.BatchCreateRecordsRequest]:
    parent = f"tenants/{tenant_id}"
    pending: list[pb.CreateRecordRequest] = []
    for n in range(patients):
        subject = f"{parent}/patients/{patient_id(n)}"
        for j in range(per_patient):
            pending.append(
                pb.CreateRecordRequest(
                    record_id=observation_id(n, j),
                    record=observation_record(n, j, subject, seed),
                )
            )
            if len(pending) == batch_size:
                yield pb.BatchCreateRecordsRequest(parent=parent, requests=pending)
                pending = []
    if pending:
        yield pb.BatchCreateRecordsRequest(parent=parent, requests=pending)
