"""A built-in sample of unlabelled texts from many domains, for checking an imported model
when its user has no data of their own: the optimize stage compares every engine variant
with fp32 on these texts (agreement, batch invariance) and calibrates int8 ranges on them.

Short sentences from reviews, news, support tickets, chat, questions, instructions, legal
and medical prose, code talk and a few other languages, combined by a seeded generator into
texts of one to six sentences: varied lengths and vocabularies, the same on every machine.
"""

from __future__ import annotations

import random

from sentiserve.data.types import Corpus, Examples

SENTENCES = (
    "The battery lasts two days and the screen is bright even in sunlight.",
    "Arrived broken, and support never answered my three emails.",
    "Honestly the best pizza I have had outside Naples.",
    "The hotel was clean but the walls were paper thin.",
    "I would not recommend this blender to anyone who cooks more than once a week.",
    "Five stars, would buy again.",
    "The central bank left interest rates unchanged on Thursday.",
    "Heavy rain is expected across the north of the country this weekend.",
    "The company reported a 12% rise in quarterly revenue, beating forecasts.",
    "Officials said the bridge would reopen to traffic by the end of March.",
    "The striker scored twice in the second half to seal the title.",
    "Scientists have found traces of water ice near the lunar south pole.",
    "My order number is 48213 and it still shows as processing.",
    "How do I reset my password if I no longer have access to my email?",
    "The app crashes every time I try to upload a photo.",
    "Please cancel my subscription and refund the last payment.",
    "Can you tell me whether the store is open on public holidays?",
    "I was charged twice for the same flight.",
    "lol that was the worst movie ever made",
    "omg cannot wait for the weekend!!!",
    "thanks so much, you saved my day :)",
    "ugh, stuck in traffic again",
    "What is the capital of Australia?",
    "Why does ice float on water?",
    "Which of these two laptops is better for video editing?",
    "Is it safe to take ibuprofen with coffee?",
    "Preheat the oven to 200 degrees and grease a baking tray.",
    "Turn the valve clockwise until the pressure gauge reads zero.",
    "Add the flour slowly, stirring all the time to avoid lumps.",
    "The tenant shall pay the rent on the first day of each calendar month.",
    "This agreement is governed by the laws of the State of New York.",
    "Either party may terminate this contract with thirty days written notice.",
    "The patient presented with a persistent cough and mild fever.",
    "No adverse events were reported during the twelve-week trial.",
    "Blood pressure should be measured after five minutes of rest.",
    "The function returns None when the key is missing from the cache.",
    "Merge conflicts in the lock file are resolved by regenerating it.",
    "The query planner ignores the index because the column is nullable.",
    "A man is playing a guitar on a crowded street corner.",
    "Two children are building a sandcastle on the beach.",
    "The committee will meet again after the elections.",
    "You are an idiot and everybody here knows it.",
    "Get out of this forum, nobody wants you here.",
    "I strongly disagree with this decision, but I respect the process.",
    "The service was slow, the food was cold, and the bill was wrong.",
    "It was fine. Nothing special, nothing terrible.",
    "Not bad at all, although the ending dragged a little.",
    "An absolute masterpiece of tension and restraint.",
    "Le film est beaucoup trop long, mais les acteurs sont excellents.",
    "Das Essen war ausgezeichnet und der Service sehr freundlich.",
    "El paquete llegó tarde y la caja estaba dañada.",
    "Il treno era in ritardo di quaranta minuti.",
    "The museum houses more than two million objects from six continents.",
    "Volunteers planted four thousand trees along the river bank.",
    "Stock markets fell sharply after the announcement.",
    "Our team is hiring engineers who enjoy hard problems.",
    "The concert was cancelled at the last minute because of the storm.",
    "I have been waiting on hold for over an hour.",
    "Great value for money, though the instructions were confusing.",
    "The sequel is louder, longer and much less fun than the original.",
)
"""Seed sentences: reviews, news, support, chat, questions, instructions, legal, medical,
code, captions, abuse, and four other languages."""

SAMPLE_SIZE = 600
SAMPLE_SEED = 20261205


def sample_texts(n: int = SAMPLE_SIZE, seed: int = SAMPLE_SEED) -> tuple[str, ...]:
    """``n`` distinct texts of one to six sentences each, the same for the same ``n`` and
    ``seed``."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < n:
        texts[" ".join(rng.sample(SENTENCES, rng.randint(1, 6)))] = None
    return tuple(texts)


def unlabelled_corpus(
    texts: tuple[str, ...], label_names: tuple[str, ...], name: str, provenance: dict[str, str]
) -> Corpus:
    """Texts with no labels as a corpus: a third for int8 calibration and temperature-free
    checks, the rest for comparing engines. Its ``labelled`` is False: nothing is scored."""
    cut = len(texts) // 3
    placeholder = (0,) * len(texts)

    def part(lo: int, hi: int) -> Examples:
        return Examples(texts[lo:hi], placeholder[lo:hi], label_names)

    calibration, held_out = part(0, cut), part(cut, len(texts))
    return Corpus(
        name=name,
        train=calibration,
        validation=calibration,
        test=held_out,
        description=f"{len(texts)} unlabelled texts ({name})",
        provenance=provenance,
        labelled=False,
    )
