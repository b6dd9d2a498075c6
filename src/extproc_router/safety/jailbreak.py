"""Jailbreak and prompt-injection detection: normalise, match known manipulation patterns, and
ask a classifier head on the shared embedding about the rest.

Normalisation undoes the cheap disguises before any pattern runs: compatibility forms and
full-width letters (NFKC), zero-width characters, look-alike Cyrillic and Greek letters,
leetspeak, letters spaced or dotted apart, and base64 / hex / rot13 blobs (decoded and scanned
as extra text). Patterns cover instruction overrides, persona and "developer mode" jailbreaks,
system-prompt extraction and refusal suppression, in several languages.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from extproc_router.safety.literals import required_literals

__all__ = [
    "DEFAULT_PATTERNS",
    "PatternMatch",
    "Rule",
    "compile_patterns",
    "match_patterns",
    "normalize_views",
]

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e"), None)
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁɡһтмкнвАЕОРСУХІЈЅВНКМТΑΒΕΖΗΙΚΜΝΟΡΤΥΧαορυνιкт",
    "aeopcyxijsdghtmknbAEOPCYXIJSBHKMTABEZHIKMNOPTYXaopuvikt",
)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s", "!": "i", "|": "l"})  # fmt: skip
# Letters split by single spaces, dots, dashes or underscores: "i g n o r e", "i.g.n.o.r.e".
_SPACED = re.compile(r"\b(?:\w[ ._\-*]){3,}\w\b")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Fa-f])")
_MAX_BLOBS = 8
# A letter next to a digit or symbol inside a word: "1gn0re", "pr3vious", "@ll".
_LEETY = re.compile(r"[a-z][0-9@$!|]+[a-z]|(?<![\w@$!|])[0-9@$!|][a-z]{2,}")
_ROT13_HINT = re.compile(r"rot[\s-]?13|caesar|cipher|decode|decipher|unscramble")
_COMMON_WORDS = re.compile(
    r"\b(?:the|and|you|your|to|of|is|are|all|what|this|that|with|ignore|previous|instructions|rules|tell|me)\b"
)


def _decoded_blobs(text: str) -> Iterable[str]:
    for count, match in enumerate(_BASE64.finditer(text)):
        if count >= _MAX_BLOBS:
            break
        blob = match.group()
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            plain = decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            continue
        if plain.isprintable() or "\n" in plain:
            yield plain
    for count, match in enumerate(_HEX.finditer(text)):
        if count >= _MAX_BLOBS:
            break
        try:
            yield bytes.fromhex(re.sub(r"[ :]", "", match.group())).decode("utf-8")
        except ValueError:
            continue


def normalize_views(text: str) -> list[str]:
    """The text as a reader would see it through each disguise; patterns run on every view."""
    plain = unicodedata.normalize("NFKC", text).translate(_ZERO_WIDTH)
    # Look-alike letters folded to Latin, for "іgnоre" spelled with Cyrillic і and о; the plain
    # view stays, so text really written in Cyrillic or Greek is read as written.
    folded = plain.translate(_HOMOGLYPHS)
    joined = _SPACED.sub(lambda m: re.sub(r"[ ._\-*]", "", m.group()), folded)
    lower = joined.lower()
    views = [plain.lower(), folded.lower(), lower]
    # The leet and rot13 readings cost a full pattern pass each; take them only when the text
    # looks written that way (digits inside words; rot13 that reads more like English).
    if _LEETY.search(lower):
        views.append(lower.translate(_LEET))
    rot13 = codecs.decode(plain, "rot13").lower()
    if _ROT13_HINT.search(views[0]) or _english_words(rot13) > _english_words(views[0]):
        views.append(rot13)
    views.extend(blob.lower() for blob in _decoded_blobs(plain))
    return list(dict.fromkeys(views))


def _english_words(text: str) -> int:
    return len(_COMMON_WORDS.findall(text))


_IGNORE = r"(?:ignore|disregard|forget|override|bypass|skip|drop|set aside|put aside|discard|abandon|throw out|scrap|erase|wipe|cancel|revoke|nullify|suspend|neglect)"
# Not "my": a user taking back their own earlier instructions is not an attack.
_PRIOR = r"(?:all |any |the |your )?(?:previous|prior|above|earlier|preceding|foregoing|original|initial|system|existing|operator'?s?|developer'?s?|default)"
_RULES = r"(?:instructions?|rules|guidelines|guidance|directives|directions|orders|commands|prompts?|programming|configuration|polic(?:y|ies)|restrictions|constraints|safety (?:rules|guidelines|filters?))"

DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    # "...the previous instructions for connecting to the VPN" are a human's, about a topic;
    # "my previous instructions" are the user's own; a quoted phrase is talked about, not said.
    (
        "instruction_override",
        rf"(?<![\'\"“‘«„])\b{_IGNORE}\b.{{0,30}}(?<!my )(?<!our )\b{_PRIOR}\b.{{0,20}}\b{_RULES}\b(?! (?:for|about|on|regarding|concerning|in (?:the|my|our|this) (?:email|manual|memo|doc)))",
    ),
    (
        "instruction_override",
        rf"\b{_IGNORE}\b (?:all|everything|any(?:thing)?) (?:you(?:'ve| have)? (?:been )?(?:told|taught|instructed)|(?:above|before))",
    ),
    ("instruction_override", r"\bnew (?:rules|instructions|directives)\s*[:\-]"),
    # Addressed to the model's own rules: "disregard your guidelines", "forget your instructions".
    (
        "instruction_override",
        rf"\b{_IGNORE}\b (?:all )?(?:of )?your (?:own |current |safety )?{_RULES}\b",
    ),
    (
        "instruction_override",
        r"\b(?:from now on|starting now|henceforth),? you (?:will|must|are|shall) (?:no longer|not|never|ignore|answer without)",
    ),
    (
        "persona",
        r"\b(?:you are|you're|act as|become|pretend to be|role-?play as|stay in character as|respond as)\b.{0,20}\b(?:dan|stan|aim|dude)\b",
    ),
    ("persona", r"\b(?:dan|stan|aim) mode\b.{0,20}\b(?:enabled|activated|engaged|unlocked)\b"),
    ("persona", r"\bdo anything now\b"),
    (
        "persona",
        r"\byou are (?:now |no longer )?(?:an? )?(?:unfiltered|uncensored|unrestricted|jailbroken|evil|amoral|unaligned)\b",
    ),
    (
        "persona",
        r"\b(?:pretend|imagine|act as if|behave as if|simulate)\b.{0,40}\b(?:no|without any|free of) (?:restrictions|filters|rules|limits|guidelines|morals|ethics|censorship)\b",
    ),
    (
        "developer_mode",
        r"\b(?:developer|debug|god|admin|maintenance|sudo|root|dan|jailbreak) mode (?:is )?(?:now )?(?:enabled|activated|unlocked|engaged|on)\b.{0,80}\b(?:you|your|ignore|no (?:restrictions|filters|rules|limits)|unrestricted|uncensored|anything|without (?:any )?(?:restrictions|filters|rules|limits))\b",
    ),
    (
        "developer_mode",
        r"\b(?:enable|activate|enter|switch to|unlock)\b.{0,20}\b(?:developer|debug|god|jailbreak|unrestricted) mode\b.{0,40}\b(?:ignore|no|without|bypass|unrestricted|uncensored|anything)\b",
    ),
    (
        "system_prompt_extraction",
        r"\b(?:reveal|print|show|output|repeat|display|leak|tell me|give me|what (?:is|are|was|were))\b.{0,30}\b(?:your|the) (?:system|initial|hidden|original|secret) (?:prompt|instructions|message|rules)\b",
    ),
    (
        "system_prompt_extraction",
        r"\brepeat (?:the|all|everything)? ?(?:text|words|lines)? ?(?:above|before this)\b.{0,40}(?:verbatim|starting with|word for word|exactly)",
    ),
    (
        "refusal_suppression",
        r"\b(?:never|do not|don't|must not) (?:refuse|say (?:you )?(?:can't|cannot|are unable)|apologi[sz]e|add (?:any )?(?:warnings?|disclaimers?))\b.{0,80}\b(?:whatever|anything|no matter|regardless|every (?:request|question))\b",
    ),
    (
        "authority_claim",
        r"\b(?:i am|i'm|this is)\b.{0,30}\b(?:openai|anthropic|your (?:developer|creator|admin)|the system administrator)\b.{0,60}\b(?:safety|filters?|restrictions|guidelines|rules)\b.{0,20}\b(?:disabled|off|lifted|removed|suspended|do not apply)\b",
    ),
    (
        "indirect_injection",
        r"(?:<!--|\[system\]|\bsystem note\b|\bimportant (?:system )?(?:note|instruction)s?\b|\bassistant:)\s*.{0,40}\b(?:ignore|disregard|instead|send|forward|exfiltrate|reveal)\b",
    ),
    (
        "multilingual",
        r"\bignora(?:r)? (?:todas )?(?:las |tus |los )?(?:instrucciones|reglas|indicaciones)(?: anteriores| previas)?",
    ),
    (
        "multilingual",
        r"\b(?:ignore[rz]?|oublie[rz]?) (?:toutes )?(?:les |tes |vos )?(?:instructions|règles|consignes) (?:précédentes|antérieures)",
    ),
    (
        "multilingual",
        r"\bignorier(?:e|en)? (?:alle )?(?:vorherigen|bisherigen|obigen) (?:anweisungen|regeln|instruktionen)",
    ),
    (
        "multilingual",
        r"\b(?:ignore[rz]?|oublie[rz]?) (?:toutes )?(?:vos|tes) (?:instructions|règles|consignes|directives)\b",
    ),
    (
        "multilingual",
        r"\bignorier(?:e|en)? (?:alle )?(?:deine|ihre) (?:anweisungen|regeln|vorgaben|richtlinien)",
    ),
    ("multilingual", r"\bignora (?:tutte )?(?:le )?istruzioni precedenti"),
    (
        "multilingual",
        r"\bignore (?:todas )?as instruções anteriores|\besqueça (?:todas )?as (?:instruções|regras)",
    ),
    ("multilingual", r"(?:игнорируй|забудь|проигнорируй).{0,20}(?:инструкци|правил)"),
    (
        "multilingual",
        r"(?:忽略|无视|忘记|忽視).{0,10}(?:之前|以上|先前|所有).{0,6}(?:指令|指示|规则|規則|说明)",
    ),
    ("multilingual", r"(?:前の|以前の|上記の).{0,6}(?:指示|命令|ルール).{0,6}(?:無視|忘れ)"),
    ("multilingual", r"(?:تجاهل|انس).{0,20}(?:التعليمات|الأوامر|القواعد)"),
    (
        "multilingual",
        r"\bnegeer (?:al )?(?:de |je )?(?:vorige|eerdere|voorgaande) (?:instructies|regels|opdrachten)",
    ),
    ("multilingual", r"\b(?:zignoruj|zapomnij)\b.{0,20}\b(?:instrukcj|polece[nń]|zasad)"),
    (
        "multilingual",
        r"(?:önceki|tüm|bütün).{0,20}(?:talimatlar|kurallar|komutlar).{0,20}(?:yok say|görmezden gel|unut)",
    ),
    ("multilingual", r"(?:이전|앞의|모든).{0,10}(?:지시|지침|명령|규칙).{0,10}(?:무시|잊)"),
    ("multilingual", r"\bbỏ qua\b.{0,20}\b(?:hướng dẫn|chỉ dẫn|lệnh|quy tắc)"),
    ("multilingual", r"\babaikan\b.{0,20}\b(?:instruksi|perintah|aturan|petunjuk)"),
    ("multilingual", r"(?:ігноруй|забудь|проігноруй).{0,20}(?:інструкці|правил|вказівк)"),
    ("multilingual", r"\b(?:ignorera|glöm)\b.{0,20}\b(?:instruktioner|regler|direktiv)"),
    ("multilingual", r"(?:αγνόησε|ξέχνα|ξέχασε).{0,20}(?:οδηγίες|κανόνες|εντολές)"),
    ("multilingual", r"(?:התעלם|שכח).{0,20}(?:הוראות|הנחיות|כללים)"),
    ("multilingual", r"(?:เพิกเฉย|ไม่ต้องสนใจ|ลืม).{0,20}(?:คำสั่ง|คำแนะนำ|กฎ)"),
    ("multilingual", r"(?:নির্দেশ|নিয়ম).{0,20}(?:উপেক্ষা|ভুলে)"),
    ("multilingual", r"\bpuuza\b.{0,20}\b(?:maagizo|maelekezo|sheria)"),
    # "No restrictions" said to the model, in other languages.
    (
        "multilingual",
        r"\b(?:eres|actúa como|actua como|responde como|finge ser|ahora eres)\b.{0,60}\bsin (?:ninguna |ningún )?(?:restricciones|filtros|reglas|censura|límites)",
    ),
    (
        "multilingual",
        r"\b(?:tu es|agis comme|réponds comme|fais comme si tu étais)\b.{0,60}\bsans (?:aucune |aucun )?(?:restrictions?|filtres?|règles?|censure|limites?)",
    ),
    (
        "multilingual",
        r"\b(?:du bist|handle als|antworte als|tu so als)\b.{0,60}\bohne (?:jegliche |irgendwelche )?(?:einschränkungen|filter|regeln|zensur|grenzen)",
    ),
    (
        "multilingual",
        r"\b(?:sei|agisci come|rispondi come|fingi di essere)\b.{0,60}\bsenza (?:alcuna |alcun )?(?:restrizion[ie]|filtri|regole|censura|limiti)",
    ),
    (
        "multilingual",
        r"\b(?:você é|voce e|aja como|responda como|finja ser)\b.{0,60}\bsem (?:nenhuma |qualquer )?(?:restrições|restricoes|filtros|regras|censura|limites)",
    ),
    (
        "multilingual",
        r"(?:ты|вы|отвечай|притворись|представь).{0,60}без (?:каких-либо |всяких )?(?:ограничений|фильтров|правил|цензуры)",
    ),
    ("multilingual", r"(?:你|您).{0,20}(?:没有|不受|无视)(?:任何)?(?:限制|过滤|规则|审查|约束)"),
    (
        "multilingual",
        r"(?:あなた|君|お前|ai|アシスタント).{0,30}(?:制限|フィルター|ルール|検閲)(?:なし|のない|なく|を無視)",
    ),
    (
        "multilingual",
        r"(?:너|당신|ai|인공지능|어시스턴트).{0,30}(?:제한|필터|규칙|검열)\s?(?:없이|없는|을 무시|를 무시)",
    ),
    # The hidden prompt asked for in other languages.
    (
        "multilingual",
        r"\b(?:muestra|muéstrame|revela|dime|imprime|repite)\b.{0,30}\b(?:prompt del sistema|instrucciones (?:del sistema|iniciales|ocultas))",
    ),
    (
        "multilingual",
        r"\b(?:montre|révèle|affiche|donne|répète)\b.{0,30}\b(?:prompt système|invite système|instructions (?:système|initiales|cachées))",
    ),
    (
        "multilingual",
        r"\b(?:zeig|verrate|gib|wiederhole)\b.{0,30}\b(?:system-?prompt|systemanweisungen|(?:ursprünglichen|versteckten) anweisungen)",
    ),
    ("multilingual", r"(?:системн\w* (?:промпт|подсказк|инструкци)|скрыт\w* инструкци)"),
    (
        "multilingual",
        r"(?:系统提示|系統提示|システムプロンプト|시스템 프롬프트).{0,20}(?:显示|告诉|输出|打印|重复|見せ|教え|出力|보여|알려|출력)|(?:显示|告诉|输出|打印|重复|見せ|教え|出力|보여|알려|출력).{0,20}(?:系统提示|系統提示|システムプロンプト|시스템 프롬프트)",
    ),
    ("multilingual", r"(?:पिछले|पहले के|सभी).{0,20}(?:निर्देशों|नियमों).{0,20}(?:अनदेखा|नज़रअंदाज़|भूल)"),
)


@dataclass(frozen=True, slots=True)
class PatternMatch:
    family: str
    matched: str


@dataclass(frozen=True, slots=True)
class Rule:
    family: str
    pattern: re.Pattern[str]
    # A match contains one of these; a view with none of them skips the regex (empty: always
    # run it).
    literals: tuple[str, ...]


def compile_patterns(extra: Iterable[tuple[str, str]] = ()) -> list[Rule]:
    """The built-in patterns are written in lower case for the lower-cased views, and matching
    without IGNORECASE runs ~40% faster; operators' patterns keep IGNORECASE, as written."""
    compiled = [
        *((family, re.compile(pattern, re.DOTALL)) for family, pattern in DEFAULT_PATTERNS),
        *((family, re.compile(pattern, re.IGNORECASE | re.DOTALL)) for family, pattern in extra),
    ]
    return [Rule(family, pattern, required_literals(pattern)) for family, pattern in compiled]


def match_patterns(text: str, rules: list[Rule]) -> PatternMatch | None:
    for view in normalize_views(text):
        for rule in rules:
            if rule.literals and not any(literal in view for literal in rule.literals):
                continue
            found = rule.pattern.search(view)
            if found is not None:
                return PatternMatch(rule.family, found.group()[:80])
    return None
