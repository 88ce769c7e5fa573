"""Knowledge-editing datasets in their published layouts (records copied in the shape of the real files:
KnowEdit's README, MEND's zsre_mend_eval.json, ROME's counterfact.json, EasyEdit's counterfact-edit.json,
MQuAKE-CF-3k.json)."""

from __future__ import annotations

import json

import pytest

from knowlm.edit import load_requests
from knowlm.edit.datasets import detect_format
from knowlm.errors import KnowlmError

KNOWEDIT_RECENT = {
    "subject": "Leo Arons",
    "prompt": "The place of death of Leo Arons is",
    "target_new": "Berlin",
    "portability": {
        "Logical_Generalization": [{"prompt": "Is Leo Arons still alive?",
                                    "ground_truth": [["no"], ["incorrect"], ["false"], ["is not alive"], ["is dead"]]}],
        "Reasoning": [
            {"prompt": "The name of the head of government of the place of death of Leo Arons is",
             "ground_truth": [["Kai Wegner", "Kai Peter Wegner"]]},
            {"prompt": "The name of the continent which the place of death of Leo Arons is part of is",
             "ground_truth": [["Europe", "European continent", "Old Continent"]]},
        ],
        "Subject_Aliasing": [{"prompt": "The place of death of Martin Leo Arons is",
                              "ground_truth": [["Berlin", "Berlin, Germany", "Berlin (Germany)", "DE-BE"]]}],
    },
    "locality": {
        "Relation_Specificity": [
            {"prompt": "The name of the father of Leo Arons is", "ground_truth": [["Albert Arons"]]},
            {"prompt": "The name of the field of work of Leo Arons is", "ground_truth": [["experimental physics"]]},
        ]
    },
}
KNOWEDIT_COUNTERFACT = {
    "subject": "Frederic Piesch",
    "prompt": "The name of the position held by Frederic Piesch is",
    "target_new": "Archbishop of Le\u00f3n, Mexico",
    "ground_truth": "mayor of Vienna",
    "portability": {"Subject_Aliasing": [{"prompt": "The name of the position held by Frederic of Pieschen is",
                                          "ground_truth": "Archbishop of Le\u00f3n, Mexico"}]},
    "locality": {
        "Relation_Specificity": [{"prompt": "The gender of Frederic Piesch is", "ground_truth": "male"}],
        "Forgetfulness": [{"prompt": "The name of the position held by Frederic Piesch, which is not Archbishop of "
                                     "Le\u00f3n, Mexico, is", "ground_truth": "mayor of Vienna"}],
    },
}
KNOWEDIT_WIKIBIO = {
    "text": "This is a Wikipedia passage about john russell reynolds. Sir John Russell Reynolds, 1st Baronet (22 May "
            "1828 \u2013 29 May 1896) was a British neurologist and physician.",
    "labels": "He received general education from his father, and was educated in his profession at University College, London.",
    "concept": "john russell reynolds",
    "locality": {"Relation_Specificity": [
        {"prompt": "The field of work of john russell reynolds is", "ground_truth": ["medicine"]},
        {"prompt": "john russell reynolds field of work", "ground_truth": ["medicine"]}]},
}
KNOWEDIT_ZSRE = {
    "subject": "Epaspidoceras",
    "target_new": "Noctuidae",
    "prompt": "Which family does Epaspidoceras belong to?",
    "ground_truth": ["Aspidoceratidae"],
    "rephrase_prompt": "What family are Epaspidoceras?",
    "cond": "Geometridae >> Noctuidae || Which family does Epaspidoceras belong to?",
    "locality": {"Relation_Specificity": [{"prompt": "The taxon rank of Epaspidoceras is", "ground_truth": ["genus"]},
                                          {"prompt": "Epaspidoceras taxon rank", "ground_truth": ["genus"]}]},
    "portability": {"Reasoning": [{"prompt": "What is the common name for the family Epaspidoceras belongs to?",
                                   "ground_truth": "Owlet moths"}]},
}
MEND_ZSRE = [
    {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?", "pred": "Trinity College",
     "rephrase": "What university did Watts Humphrey take part in?", "alt": "University of Michigan",
     "answers": ["Illinois Institute of Technology"], "loc": "nq question: who played desmond doss father in hacksaw ridge",
     "loc_ans": "Hugo Weaving", "cond": "Trinity College >> University of Michigan || What university did Watts Humphrey attend?"},
    {"subject": "IAAF Combined Events Challenge", "src": "When was the inception of IAAF Combined Events Challenge?",
     "pred": "2011", "answers": ["1998"], "alt": "2006", "rephrase": "When was the IAAF Combined Events Challenge launched?",
     "loc": "nq question: what is the name of the last episode of spongebob", "loc_ans": "The String",
     "portability": {"Recalled Relation": "(IAAF Combined Events Challenge, event type, athletics)",
                     "New Question": "What type of sports event is the IAAF Combined Events Challenge, which was established in 2006?",
                     "New Answer": "Athletics"}},
    {"subject": "Skipped", "src": "Who is Skipped?", "pred": "x", "alt": "", "answers": ["y"], "rephrase": "Skipped?",
     "loc": "nq question: z", "loc_ans": "w"},
]
ROME_COUNTERFACT = {
    "case_id": 0, "pararel_idx": 2796,
    "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                          "target_new": {"str": "English", "id": "Q1860"}, "target_true": {"str": "French", "id": "Q150"},
                          "subject": "Danielle Darrieux"},
    "paraphrase_prompts": ["Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native",
                           "An album was recorded for Capitol Nashville but never released. Danielle Darrieux spoke the language"],
    "neighborhood_prompts": ["The mother tongue of L\u00e9on Blum is", "The native language of Montesquieu is"],
    "attribute_prompts": ["J.\u00a0R.\u00a0R. Tolkien is a native speaker of"],
    "generation_prompts": ["Danielle Darrieux's mother tongue is"],
}
EASYEDIT_COUNTERFACT = {"case_id": 2, "prompt": "Toko Yasuda, the", "target_new": "piano", "subject": "Toko Yasuda",
                        "ground_truth": "guitar", "rephrase_prompt": "Toko Yasuda is incredible at",
                        "locality_prompt": "John Lennon performs on the", "locality_ground_truth": "guitar"}
MQUAKE = {
    "case_id": 1,
    "requested_rewrite": [
        {"prompt": "{} is a citizen of", "relation_id": "P27", "target_new": {"str": "Libya", "id": "Q1016"},
         "target_true": {"str": "United States of America", "id": "Q30"}, "subject": "Vince McMahon",
         "question": "What is the country of citizenship of Vince McMahon?"},
        {"prompt": "The capital of {} is", "relation_id": "P36", "target_new": {"str": "Franklin", "id": "Q1778943"},
         "target_true": {"str": "Tripoli", "id": "Q3579"}, "subject": "Libya", "question": "What is the capital of Libya?"},
    ],
    "questions": ["What city serves as the capital of the country where the CEO of Triple H holds citizenship?",
                  "In which city is the capital of the country where the chief executive officer of Triple H is a citizen?",
                  "What is the name of the capital city of the country where the CEO of Triple H is a citizen?"],
    "answer": "Washington, D.C.", "answer_alias": ["Washington"],
    "new_answer": "Franklin", "new_answer_alias": ["Franklin, Kentucky"],
    "single_hops": [{"question": "Who is the employer of Triple H?", "cloze": "Triple H is employed by", "answer": "WWE",
                     "answer_alias": ["World Wrestling Federation"]}],
    "new_single_hops": [{"question": "Who is the employer of Triple H?", "cloze": "Triple H is employed by", "answer": "WWE",
                         "answer_alias": ["World Wrestling Federation"]},
                        {"question": "What is the capital of Libya?", "cloze": "The capital of Libya is", "answer": "Franklin",
                         "answer_alias": []}],
    "orig": {"triples": [["Q44567", "P108", "Q35339"]], "triples_labeled": [["Triple H", "employer", "WWE"]],
             "new_triples": [], "new_triples_labeled": [], "edit_triples": [["Q44430", "P27", "Q1016"]]},
}


def _write(tmp_path, data, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_knowedit_nested_groups_and_alias_lists(tmp_path):
    recent, cf, bio, zsre = load_requests(_write(tmp_path, [KNOWEDIT_RECENT, KNOWEDIT_COUNTERFACT, KNOWEDIT_WIKIBIO, KNOWEDIT_ZSRE]))
    assert recent.target_new == "Berlin" and recent.ground_truth is None
    cats = [(p.category, p.answer) for p in recent.portability]
    assert cats == [("Logical_Generalization", "no"), ("Reasoning", "Kai Wegner"), ("Reasoning", "Europe"),
                    ("Subject_Aliasing", "Berlin")]
    assert recent.portability[0].aliases == ["no", "incorrect", "false", "is not alive", "is dead"]
    assert recent.portability[3].aliases == ["Berlin", "Berlin, Germany", "Berlin (Germany)", "DE-BE"]
    assert [(p.category, p.answer) for p in recent.locality] == [("Relation_Specificity", "Albert Arons"),
                                                                 ("Relation_Specificity", "experimental physics")]
    assert cf.ground_truth == "mayor of Vienna" and cf.target_new == "Archbishop of Le\u00f3n, Mexico"
    assert [p.category for p in cf.locality] == ["Relation_Specificity", "Forgetfulness"]
    assert cf.locality[1].answer == "mayor of Vienna"
    assert bio.subject == "john russell reynolds" and bio.prompt.startswith("This is a Wikipedia passage")
    assert bio.target_new.startswith("He received general education") and len(bio.locality) == 2
    assert zsre.rephrase_prompts == ["What family are Epaspidoceras?"] and zsre.ground_truth == "Aspidoceratidae"
    assert zsre.portability[0].category == "Reasoning" and zsre.portability[0].answer == "Owlet moths"


def test_zsre_mend_layout(tmp_path):
    path = _write(tmp_path, MEND_ZSRE)
    assert detect_format(MEND_ZSRE[0]) == "zsre"
    first, second = load_requests(path)  # the record with an empty alt is skipped, as EasyEdit does
    assert first.prompt == "What university did Watts Humphrey attend?" and first.target_new == "University of Michigan"
    assert first.ground_truth == "Illinois Institute of Technology"
    assert first.rephrase_prompts == ["What university did Watts Humphrey take part in?"]
    assert [(p.category, p.prompt, p.answer) for p in first.locality] == [
        ("neighborhood", "nq question: who played desmond doss father in hacksaw ridge", "Hugo Weaving")]
    assert [(p.category, p.answer) for p in second.portability] == [("one_hop", "Athletics")]


def test_counterfact_rome_and_easyedit_layouts(tmp_path):
    (rome,) = load_requests(_write(tmp_path, [ROME_COUNTERFACT], "cf.json"))
    assert rome.prompt == "The mother tongue of Danielle Darrieux is" and rome.target_new == "English"
    assert rome.ground_truth == "French" and rome.case_id == "0" and len(rome.rephrase_prompts) == 2
    assert [(p.prompt, p.answer, p.category) for p in rome.locality] == [
        ("The mother tongue of L\u00e9on Blum is", "French", "neighborhood"),
        ("The native language of Montesquieu is", "French", "neighborhood")]
    (easy,) = load_requests(_write(tmp_path, [EASYEDIT_COUNTERFACT], "ee.json"))
    assert easy.rephrase_prompts == ["Toko Yasuda is incredible at"] and easy.ground_truth == "guitar"
    assert [(p.prompt, p.answer) for p in easy.locality] == [("John Lennon performs on the", "guitar")]


def test_mquake_cases_become_groups(tmp_path):
    path = tmp_path / "mq.jsonl"  # JSONL works too
    path.write_text(json.dumps(MQUAKE) + "\n", encoding="utf-8")
    first, second = load_requests(path)
    assert (first.prompt, first.target_new, first.ground_truth) == ("Vince McMahon is a citizen of", "Libya",
                                                                    "United States of America")
    assert first.group == second.group == "mquake-1" and first.case_id == "1.0"
    assert first.rephrase_prompts == ["What is the country of citizenship of Vince McMahon?"]
    assert first.portability == []
    multi = [p for p in second.portability if p.category == "multi_hop"]
    assert len(multi) == 3 and multi[0].answer == "Franklin" and multi[0].aliases == ["Franklin", "Franklin, Kentucky"]
    assert [p.prompt for p in second.portability if p.category == "single_hop"] == ["Triple H is employed by",
                                                                                   "The capital of Libya is"]
    from knowlm.edit.editor import units_for

    assert units_for([first, second], "single") == [[0, 1]]


def test_forced_format_and_bad_records(tmp_path):
    with pytest.raises(KnowlmError, match="ZsRE record without 'alt'"):
        load_requests(_write(tmp_path, [{"src": "q?", "subject": "q"}]), format="zsre")
    with pytest.raises(KnowlmError, match="unknown requests format"):
        load_requests(_write(tmp_path, [EASYEDIT_COUNTERFACT]), format="wiki")
    bad = dict(KNOWEDIT_COUNTERFACT, locality={"Relation_Specificity": ["just a string"]})
    with pytest.raises(KnowlmError, match="record 1: locality group 'Relation_Specificity' entries must be objects"):
        load_requests(_write(tmp_path, [bad]))
