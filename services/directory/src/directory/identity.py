"""Peer identity: an Ed25519 key per peer, and which key holds which peer id here.

A peer id is a name its operator picks (`peer2`); what makes it mean something is a key.
Every peer has one (`identity.key` in its state folder, made on first start, mode 0600,
PKCS#8 PEM as OpenSSL writes it: `openssl pkey -in identity.key -pubout` reads it),
and proves it whenever it answers a peer that is deciding who it is:

    caller -> GET /health              X-Peerfind-Challenge: <fresh random nonce>
    callee <- {peer_id, url, grpc_address, ..., proof: {key, signature}}
              signature = Ed25519(key, ["peerfind-proof-v1", nonce, peer_id, url, grpc_address])

The same header and `proof` field go with `POST /register` and `POST /overlay` answers.
The caller checks the signature, and that `url` is the URL it called (so a peer cannot
relay someone else's proof: the holder signs only its own URL). The first key that
proves an id here **binds** it (`KeyBook`, kept in `keys.json` across restarts, as SSH
keeps known hosts); from then on the id is taken only with that key's proof, whatever
address it comes from, and an id held by another key is refused (`peer_id_taken`).
The key's fingerprint (`key_id`, base32 of its SHA-256, as Syncthing's device ids) is
what `/health` and `/peers` show, so an operator can compare it out of band.

What this does not do: the first claim of an id that a peer has never seen is trusted
on first use. docs/security.md states the model.

Framework-free: no HTTP here; `directory.membership` carries challenges and proofs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from peerfind.api import CHALLENGE_PATTERN, Proof

__all__ = [
    "KEY_BOOK_CAPACITY",
    "PROOF_CONTEXT",
    "Claim",
    "IdentityConflict",
    "IdentityFileError",
    "KeyBook",
    "PeerKey",
    "ProofError",
    "check_proof",
    "key_id_of",
    "new_challenge",
    "valid_challenge",
]

logger = logging.getLogger(__name__)

PROOF_CONTEXT = "peerfind-proof-v1"
"""First element of every signed statement: a signature is never valid for another use."""
KEY_BOOK_CAPACITY = 10_000
"""Bindings kept; past it the least recently proven id not in `keep` is forgotten."""
_CHALLENGE = re.compile(CHALLENGE_PATTERN)


class ProofError(ValueError):
    """A proof that does not hold: malformed, or not signed by its key over this claim."""


class IdentityConflict(ValueError):
    """An id already bound here to another key."""

    def __init__(self, peer_id: str, held_by: str, offered: str) -> None:
        super().__init__(
            f"{peer_id} is held by key {held_by[:16]}..., not {offered[:16]}...: "
            "an id is never rebound without its key's proof"
        )
        self.peer_id, self.held_by, self.offered = peer_id, held_by, offered


class IdentityFileError(RuntimeError):
    """The key file exists but cannot be used (never silently replaced: that would be a
    new identity, refused by every peer that knew the old one)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """Who an answer says it comes from."""

    peer_id: str
    url: str
    grpc_address: str


def key_id_of(public: bytes) -> str:
    """The fingerprint of a public key: lowercase base32 of its SHA-256, 52 characters."""
    digest = hashlib.sha256(public).digest()
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str, size: int) -> bytes:
    data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    if len(data) != size:
        raise ValueError(f"{len(data)} bytes where {size} belong")
    return data


def _statement(challenge: str, claim: Claim) -> bytes:
    fields = [PROOF_CONTEXT, challenge, claim.peer_id, claim.url, claim.grpc_address]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


def new_challenge() -> str:
    """A fresh nonce for one exchange (24 URL-safe characters, 144 random bits)."""
    return secrets.token_urlsafe(18)


def valid_challenge(challenge: str) -> bool:
    return bool(_CHALLENGE.match(challenge))


# RFC 8410: an Ed25519 private key in PKCS#8 is this DER prefix and the 32-byte seed.
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PEM_LABEL = "PRIVATE KEY"


def _pem(seed: bytes) -> bytes:
    body = base64.encodebytes(_PKCS8_PREFIX + seed).decode().replace("\n", "")
    return f"-----BEGIN {_PEM_LABEL}-----\n{body}\n-----END {_PEM_LABEL}-----\n".encode()


def _seed_of(pem: bytes, path: Path) -> bytes:
    lines = pem.decode("ascii", errors="replace").strip().splitlines()
    framed = lines[:1] + lines[-1:] == [
        f"-----BEGIN {_PEM_LABEL}-----",
        f"-----END {_PEM_LABEL}-----",
    ]
    if len(lines) < 3 or not framed:
        raise IdentityFileError(f"{path} is not a usable key: not a PEM private key")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error as exc:
        raise IdentityFileError(f"{path} is not a usable key: {exc}") from None
    if len(der) != len(_PKCS8_PREFIX) + 32 or not der.startswith(_PKCS8_PREFIX):
        raise IdentityFileError(f"{path} is not a usable key: not an Ed25519 private key")
    return der[len(_PKCS8_PREFIX) :]


class PeerKey:
    """This peer's signing key (Ed25519, through libsodium: PyNaCl)."""

    def __init__(self, seed: bytes) -> None:
        self._signing = nacl.signing.SigningKey(seed)
        self._seed = seed
        self.public = self._signing.verify_key.encode()
        self.key_id = key_id_of(self.public)
        self._public_b64 = _b64(self.public)

    @classmethod
    def generate(cls) -> PeerKey:
        return cls(secrets.token_bytes(32))

    @classmethod
    def load_or_create(cls, path: Path) -> PeerKey:
        """The key in `path` (PEM, PKCS#8), made there first if absent (mode 0600).

        Raises IdentityFileError when the file is there but is not an Ed25519 key.
        """
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(_pem(key._seed))
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(partial, path)  # never over a key another process made meanwhile
            except FileExistsError:
                return cls._load(path)
        finally:
            partial.unlink(missing_ok=True)
        logger.info("made a new identity key %s: key id %s", path, key.key_id)
        return key

    @classmethod
    def _load(cls, path: Path) -> PeerKey:
        return cls(_seed_of(path.read_bytes(), path))

    def prove(self, challenge: str, claim: Claim) -> Proof:
        signature = self._signing.sign(_statement(challenge, claim)).signature
        return Proof(key=self._public_b64, signature=_b64(signature))


def check_proof(proof: Proof, challenge: str, claim: Claim) -> str:
    """The key id that signed `claim` for `challenge`. Raises ProofError if none did."""
    try:
        public = _unb64(proof.key, 32)
        signature = _unb64(proof.signature, 64)
        verifier = nacl.signing.VerifyKey(public)
    except (binascii.Error, ValueError, nacl.exceptions.CryptoError) as exc:
        raise ProofError(f"malformed proof: {exc}") from None
    try:
        verifier.verify(_statement(challenge, claim), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        raise ProofError("the signature does not match the key and the claim") from None
    return key_id_of(public)


class KeyBook:
    """Which key holds which peer id, as proven here: bound by the first proof, never
    rebound. Bounded (`capacity`): past it, the least recently proven id for which `keep`
    is false is forgotten (ids in our views are kept, so only a peer long out of sight
    loses its binding). Optionally kept in a JSON file across restarts."""

    def __init__(
        self,
        path: Path | None = None,
        *,
        capacity: int = KEY_BOOK_CAPACITY,
        keep: Callable[[str], bool] = lambda peer_id: False,
    ) -> None:
        self.path = path
        self.capacity = capacity
        self.keep = keep
        self._keys: OrderedDict[str, str] = OrderedDict()
        self.dirty = False
        if path is not None:
            self._keys.update(self._read(path))

    @staticmethod
    def _read(path: Path) -> Iterable[tuple[str, str]]:
        try:
            data = json.loads(path.read_text())
            keys = data["keys"]
            return [(str(k), str(v)) for k, v in keys.items()]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Unlike the key itself, bindings are a cache of what peers proved: start over.
            logger.warning("ignoring unreadable %s: %s", path, exc)
            return []

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._keys

    def holder(self, peer_id: str) -> str | None:
        return self._keys.get(peer_id)

    def bind(self, peer_id: str, key_id: str) -> None:
        """Record that `key_id` proved `peer_id`. Raises IdentityConflict if another key
        holds it."""
        held = self._keys.get(peer_id)
        if held is not None and held != key_id:
            raise IdentityConflict(peer_id, held, key_id)
        if held is None:
            self._keys[peer_id] = key_id
            self.dirty = True
            self._trim()
        else:
            self._keys.move_to_end(peer_id)

    def _trim(self) -> None:
        while len(self._keys) > self.capacity:
            victim = next((p for p in self._keys if not self.keep(p)), None)
            if victim is None:
                return
            del self._keys[victim]

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"version": 1, "keys": dict(self._keys)}, indent=0))
        tmp.replace(self.path)
        self.dirty = False
