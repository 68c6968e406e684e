"""Client tokens: minted, verified, and refused with the reason a client can act on."""

from __future__ import annotations

import time

import jwt
import pytest

from meetingtasks.errors import AuthError, InvalidOption
from meetingtasks.gateway import protocol as p
from meetingtasks.gateway.auth import AUDIENCE, mint_token, verify

SECRET = "a-test-secret-of-more-than-32-bytes!"


def refusal(token: str | None, **options: object) -> AuthError:
    with pytest.raises(AuthError) as caught:
        verify(token, secret=SECRET, **options)  # type: ignore[arg-type]
    return caught.value


def test_a_token_names_its_user_and_meetings_until_it_expires() -> None:
    principal = verify(mint_token("u1", ["m1", "m2"], 60, secret=SECRET), secret=SECRET)
    assert principal.user_id == "u1"
    assert principal.allows("m1") and principal.allows("m2") and not principal.allows("m3")
    assert not principal.expired(time.time()) and principal.expired(time.time() + 3600)


def test_each_problem_has_its_own_code_and_a_message_to_act_on() -> None:
    assert refusal(None).code == p.TOKEN_MISSING
    forged = refusal(mint_token("u1", [], 60, secret="another-secret-of-more-than-32-bytes"))
    assert forged.code == p.TOKEN_BAD_SIGNATURE and "secret" in str(forged)
    expired = refusal(mint_token("u1", [], 60, secret=SECRET, now=time.time() - 3600))
    assert expired.code == p.TOKEN_EXPIRED and "mint a new one" in str(expired)
    assert refusal("not.a.token").code == p.TOKEN_MALFORMED
    assert refusal("x" * 10_000).code == p.TOKEN_MALFORMED


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "u1", "iat": 0},  # no exp, no aud
        {"sub": "u1", "exp": 2**40, "iat": 0, "aud": "someone-else"},
        {"sub": 5, "exp": 2**40, "iat": 0, "aud": AUDIENCE},
        {"sub": "u1", "exp": 2**40, "iat": 0, "aud": AUDIENCE, "meetings": "m1"},
        {"sub": "u1", "exp": 2**40, "iat": 0, "aud": AUDIENCE, "meetings": ["meeting.*"]},
    ],
)
def test_tokens_with_missing_or_wrong_claims_are_malformed(claims: dict) -> None:
    assert refusal(jwt.encode(claims, SECRET, algorithm="HS256")).code == p.TOKEN_MALFORMED


def test_an_unsigned_token_is_refused() -> None:
    claims = {"sub": "u1", "exp": 2**40, "iat": 0, "aud": AUDIENCE}
    assert refusal(jwt.encode(claims, None, algorithm="none")).code == p.TOKEN_MALFORMED


def test_minting_refuses_what_could_never_verify() -> None:
    with pytest.raises(InvalidOption):
        mint_token("", [], 60, secret=SECRET)
    with pytest.raises(InvalidOption):
        mint_token("u1", ["a*b"], 60, secret=SECRET)
    with pytest.raises(InvalidOption):
        mint_token("u1", [], 0, secret=SECRET)
