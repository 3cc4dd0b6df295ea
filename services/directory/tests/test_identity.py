"""Identity keys, proofs and the book of which key holds which peer id."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from directory.identity import (
    Claim,
    IdentityConflict,
    IdentityFileError,
    KeyBook,
    PeerKey,
    ProofError,
    check_proof,
    key_id_of,
    new_challenge,
    valid_challenge,
)
from peerfind.api import Proof

CLAIM = Claim("peer2", "http://127.0.0.2:8002", "127.0.0.2:50052")


def test_a_key_is_made_once_private_to_its_owner_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "state" / "identity.key"
    first = PeerKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PeerKey.load_or_create(path).key_id == first.key_id
    assert len(first.key_id) == 52 and first.key_id == key_id_of(first.public)
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]  # no leftovers


def test_a_damaged_key_file_is_an_error_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_text("not a key")
    with pytest.raises(IdentityFileError, match="not a usable key"):
        PeerKey.load_or_create(path)
    assert path.read_text() == "not a key"


def test_a_proof_holds_for_its_challenge_and_claim_only() -> None:
    key = PeerKey.generate()
    challenge = new_challenge()
    proof = key.prove(challenge, CLAIM)
    assert check_proof(proof, challenge, CLAIM) == key.key_id
    for other_challenge, claim in [
        (new_challenge(), CLAIM),
        (challenge, Claim("peer3", CLAIM.url, CLAIM.grpc_address)),
        (challenge, Claim(CLAIM.peer_id, "http://127.0.0.9:8002", CLAIM.grpc_address)),
        (challenge, Claim(CLAIM.peer_id, CLAIM.url, "127.0.0.9:50052")),
    ]:
        with pytest.raises(ProofError, match="does not match"):
            check_proof(proof, other_challenge, claim)


def test_a_proof_under_another_key_or_malformed_is_refused() -> None:
    challenge = new_challenge()
    real, other = PeerKey.generate(), PeerKey.generate()
    signed = real.prove(challenge, CLAIM)
    swapped = Proof(key=other.prove(challenge, CLAIM).key, signature=signed.signature)
    with pytest.raises(ProofError, match="does not match"):
        check_proof(swapped, challenge, CLAIM)
    bad = Proof.model_construct(key="A" * 43, signature="!" * 86)
    with pytest.raises(ProofError, match="malformed"):
        check_proof(bad, challenge, CLAIM)


def test_challenges_are_fresh_and_well_formed() -> None:
    seen = {new_challenge() for _ in range(100)}
    assert len(seen) == 100 and all(valid_challenge(c) for c in seen)
    assert not valid_challenge("short") and not valid_challenge("x" * 15 + "\n")


def test_the_first_key_binds_an_id_and_no_other_key_takes_it() -> None:
    book = KeyBook()
    book.bind("peer2", "a" * 52)
    book.bind("peer2", "a" * 52)  # the holder again: fine
    with pytest.raises(IdentityConflict, match="peer2 is held by key aaaa"):
        book.bind("peer2", "b" * 52)
    assert book.holder("peer2") == "a" * 52


def test_the_book_forgets_the_oldest_ids_not_kept_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    book = KeyBook(path, capacity=3, keep=lambda peer_id: peer_id == "p0")
    for n in range(5):
        book.bind(f"p{n}", f"{n}" * 52)
    assert sorted(book._keys) == ["p0", "p3", "p4"]  # p0 is kept (in a view), p1, p2 went
    book.save()
    again = KeyBook(path)
    assert again.holder("p3") == "3" * 52 and "p1" not in again
    path.write_text("{broken")
    assert len(KeyBook(path)) == 0  # a damaged cache starts over


def test_keys_are_openssl_s_pkcs8_both_ways(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl (Debian's) reads and writes the same key files"
    ours = tmp_path / "ours.key"
    key = PeerKey.load_or_create(ours)
    der = subprocess.run(
        [openssl, "pkey", "-in", str(ours), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert der[-32:] == key.public
    theirs = tmp_path / "theirs.key"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(theirs)], check=True)
    der = subprocess.run(
        [openssl, "pkey", "-in", str(theirs), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert PeerKey.load_or_create(theirs).public == der[-32:]
    rsa = tmp_path / "rsa.key"
    subprocess.run([openssl, "genpkey", "-algorithm", "rsa", "-out", str(rsa)], check=True)
    with pytest.raises(IdentityFileError, match="not an Ed25519 private key"):
        PeerKey.load_or_create(rsa)
