"""A small documented lexicon of meaning classes, for like-with-like edits. Pure data and lookups.

Why our own: WordNet-style resources either need a download at run time or group by sense, not by what
an image shows (WordNet puts "orange" the colour and the fruit in one lemma). Captions describe a few
visual kinds (colours, sizes, materials, counts, places, people, animals...), so a curated list, lemma ->
kind, covers them and stays reviewable. Words outside it are never *replaced* (only swapped with words
of their own fine tag). Synonym groups keep edits from producing a caption that means the same thing.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_KINDS: dict[str, str] = {
    "colour": "red orange yellow green blue purple pink brown black white gray grey silver gold beige tan "
              "maroon cyan teal navy violet",
    "size": "big large small little tiny huge giant tall short long wide narrow",
    "material": "wooden metal plastic glass leather stone brick concrete paper cardboard ceramic steel "
                "wicker marble",
    "age": "old young new",
    "pattern": "striped checkered plaid spotted floral polka",
    "state": "empty full open closed wet dry clean dirty",
    "temperature": "hot cold warm",
    "light": "dark bright",
    "number": "two three four five six seven eight nine ten",
    "shape": "circle square triangle diamond star cross heart hexagon",
    "person": "man woman boy girl child kid baby lady guy person player skier surfer skateboarder "
              "snowboarder rider officer chef",
    "animal": "dog cat horse cow sheep elephant giraffe zebra bear bird duck pigeon seagull goat "
              "pony puppy kitten",
    "vehicle": "car truck bus train motorcycle bicycle bike boat airplane plane van taxi scooter "
               "jeep tractor",
    "food": "pizza sandwich cake donut banana apple orange broccoli carrot hot_dog hotdog salad "
            "burger sandwich bread pasta rice egg",
    "furniture": "table chair couch sofa bed desk bench shelf cabinet dresser stool",
    "kitchenware": "plate bowl cup mug glass bottle knife fork spoon pan pot vase",
    "room": "kitchen bathroom bedroom office room",
    "outdoor": "street road field beach park sidewalk yard lawn grass water snow sand hill mountain "
               "river lake ocean",
    "clothing": "shirt jacket hat cap coat dress helmet tie suit shorts jeans scarf",
    "equipment": "frisbee kite surfboard skateboard skis snowboard racket umbrella ball bat laptop "
                 "phone remote book clock television tv computer keyboard",
    "fixture": "toilet sink tub bathtub shower mirror window door wall fence pole sign light lamp",
    "activity_verb": "sitting standing lying laying walking running riding holding eating drinking "
                     "playing looking",
}
# A word can belong to one kind only; where it reads two ways ("orange", "glass") the first wins.
KIND_OF: dict[str, str] = {}
for _kind, _words in _KINDS.items():
    for _word in _words.split():
        KIND_OF.setdefault(_word.replace("_", " "), _kind)
WORDS_OF_KIND: dict[str, tuple[str, ...]] = {}
for _word, _kind in KIND_OF.items():
    WORDS_OF_KIND.setdefault(_kind, ())
    WORDS_OF_KIND[_kind] += (_word,)

# Spatial relations and what they become: opposites first, then siblings.
RELATION_SWAPS: dict[str, tuple[str, ...]] = {
    "on": ("under", "beside"), "under": ("on", "above"), "above": ("below", "under"),
    "below": ("above",), "beneath": ("above", "on"), "inside": ("outside",), "outside": ("inside",),
    "behind": ("in front of",), "near": ("far from",), "left": ("right",), "right": ("left",),
    "over": ("under",), "into": ("out of",), "top": ("bottom",), "bottom": ("top",),
}

# Curated synonym groups: a swap or replacement inside one group keeps the meaning.
_SYNONYMS = [
    "man guy gentleman male", "woman lady female", "child kid", "boy lad", "girl lass",
    "couch sofa", "big large huge", "small little tiny", "bike bicycle", "plane airplane aeroplane jet",
    "tv television", "gray grey", "hotdog hot dog", "cup mug", "photo picture image photograph",
    "cap hat", "road street", "stone rock", "puppy dog", "kitten cat", "taxi cab", "laying lying",
    "automobile car", "people persons", "motorcycle motorbike", "grass lawn", "sea ocean",
]
SYNONYM_GROUP: dict[str, int] = {w: n for n, group in enumerate(_SYNONYMS) for w in group.split()}

PRONOUNS = _set("i me my mine you your yours he him his she her hers it its they them their theirs we us our "
                "ours this that these those itself himself herself themselves someone something one")
DETERMINERS = _set("a an the some any each every another no all both either neither")
SINGULAR_DETERMINERS = _set("a an one this that another each every")
PLURAL_DETERMINERS = _set("two three four five six seven eight nine ten eleven twelve these those several many "
                          "both few")
# Nouns that head a quantity or a view, or sit inside fixed relations ("in front of", "a group of").
# Nouns that name a place relative to something: inside "to the left of", "in front of", "on top of" they are
# part of the relation, not objects of their own.
SPATIAL_NOUNS = _set("left right front top side middle edge back bottom")
FUNCTIONAL_NOUNS = SPATIAL_NOUNS | _set("lot lots couple bunch group pair kind type variety "
                        "piece view picture image photo photograph close closeup shot number herd flock set row "
                        "line stack pile")
# Adjectives that work as quantifiers or inside fixed relations ("next to", "close to").
FUNCTIONAL_ADJECTIVES = _set("next close other same different many several few much more most such own various "
                             "certain able top front back left right")
# Verbs whose swap edits grammar, not content.
FUNCTIONAL_VERBS = _set("be have do get make let seem appear")


def kind(lemma: str) -> str | None:
    return KIND_OF.get(lemma.lower())


def synonyms(first: str, second: str) -> bool:
    a, b = SYNONYM_GROUP.get(first.lower()), SYNONYM_GROUP.get(second.lower())
    return a is not None and a == b


@lru_cache(maxsize=1 << 14)
def article_for(word: str) -> str:
    """'a' or 'an' before `word`, by sound (inflect: "an hour", "a university", "an FBI agent")."""
    import inflect  # deferred: ~0.1 s to import, and only edits that touch an article need it

    return str(_engine(inflect).a(word)).split(" ", 1)[0].lower()


@lru_cache(maxsize=1 << 14)
def inflect_noun(word: str, have: str, want: str) -> str:
    """Noun `word`, of number `have`, in number `want` ('Sing'/'Plur'): a noun moved into a slot of the
    other number takes the slot's number, so "two dogs and a cat" becomes "two cats and a dog"."""
    import inflect

    if have == want or want not in ("Sing", "Plur") or have not in ("Sing", "Plur"):
        return word
    engine = _engine(inflect)
    if want == "Plur":
        return str(engine.plural_noun(word))
    singular = engine.singular_noun(word)
    return singular if isinstance(singular, str) and singular else word


_ENGINE: list[Any] = []


def _engine(module: Any) -> Any:
    if not _ENGINE:
        _ENGINE.append(module.engine())
    return _ENGINE[0]
