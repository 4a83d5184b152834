"""A small BEIR-format data set: four conditions, three kinds of question each.

Every question has sibling answers about the same condition, as in MedQuAD,
so a retriever must tell the kind of question apart, not just the topic.
"""

from __future__ import annotations

import json
from pathlib import Path

FACTS = {
    "asthma": {
        "symptoms": "Wheezing, shortness of breath, chest tightness and a cough worse at night.",
        "causes": "Inflamed, narrowed airways; triggers include allergens, smoke and cold air.",
        "treatment": "Inhaled corticosteroids to control it and a reliever inhaler for attacks.",
    },
    "gout": {
        "symptoms": "Sudden severe pain, swelling and redness of a joint, often the big toe.",
        "causes": "Uric acid crystals in the joint when blood uric acid stays high.",
        "treatment": "Anti-inflammatory drugs for flares and allopurinol to lower uric acid.",
    },
    "migraine": {
        "symptoms": "Throbbing headache on one side with nausea and sensitivity to light.",
        "causes": "Changes in brain activity; triggers include stress, sleep loss and hormones.",
        "treatment": "Triptans or pain relievers early in an attack; preventive drugs if frequent.",
    },
    "glaucoma": {
        "symptoms": "Gradual loss of side vision, often unnoticed until it is advanced.",
        "causes": "Damage to the optic nerve, usually from raised pressure inside the eye.",
        "treatment": "Eye drops that lower eye pressure, laser treatment or surgery.",
    },
}
QUESTIONS = {
    "symptoms": "What are the symptoms of {} ?",
    "causes": "What causes {} ?",
    "treatment": "What are the treatments for {} ?",
}


def write_dataset(directory: Path, *, extra_qrels: str = "") -> Path:
    """corpus.jsonl, queries.jsonl and qrels/train.tsv (+ test.tsv, the same) in `directory`."""
    (directory / "qrels").mkdir(parents=True)
    corpus, queries, qrels = [], [], ["query-id\tcorpus-id\tscore"]
    for condition, facts in FACTS.items():
        for aspect, text in facts.items():
            doc_id = f"{condition}-{aspect}"
            corpus.append({"_id": doc_id, "title": condition.title(), "text": text})
            queries.append({"_id": f"q-{doc_id}", "text": QUESTIONS[aspect].format(condition)})
            qrels.append(f"q-{doc_id}\t{doc_id}\t1")
    (directory / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus) + "\n")
    (directory / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (directory / "qrels" / "train.tsv").write_text("\n".join(qrels) + "\n" + extra_qrels)
    (directory / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return directory
