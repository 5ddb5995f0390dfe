"""Key rotation: a new primary Fernet key, every sensitive column re-encrypted
under it in batches, and then (on request) the old keys removed."""

from __future__ import annotations

from cryptography.fernet import Fernet
from sqlalchemy import select, update

from union.crypto import Vault
from union.models import SENSITIVE_COLUMNS


async def reencrypt_all(sessions, vault: Vault, *, batch: int = 500, progress=None) -> int:
    """Rotate every stored token to `vault`'s primary key; returns how many values changed."""
    changed = 0
    for model, column in SENSITIVE_COLUMNS:
        col = getattr(model, column)
        pk = model.id
        last = 0
        while True:
            async with sessions() as session:
                rows = (await session.execute(
                    select(pk, col).where(pk > last, col.is_not(None)).order_by(pk).limit(batch))).all()
                if not rows:
                    break
                for row_id, token in rows:
                    await session.execute(update(model).where(pk == row_id).values({column: vault.rotate(token)}))
                await session.commit()
            changed += len(rows)
            last = rows[-1][0]
            if progress:
                progress(f"{model.__tablename__}.{column}", changed)
    return changed


def new_key() -> str:
    return Fernet.generate_key().decode()


def write_keys(path, keys: list[str]) -> None:
    import os

    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(keys) + "\n")
    os.replace(tmp, path)
