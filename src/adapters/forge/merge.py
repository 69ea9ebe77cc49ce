"""Merging a pull request's head into its base in a scratch clone, then pushing the result.

The base branch of the bare repository only ever moves by a non-forced push of a commit
built on the base tip the clone saw. When that push is refused because someone else moved
the base in between, the whole merge is redone on the new tip (a bounded number of
times); when the change does not apply, nothing is pushed at all: the base stays untouched.
"""

from __future__ import annotations

from pathlib import Path

from codeyard.adapters.forge.git import Git
from codeyard.adapters.forge.repos import clone, conflicted_files, rev_parse, scratch_dir
from codeyard.domain.code_host import CodeHostUnavailable, GitFailed, MergeConflict, MergeMethod


async def merge_into_base(
    git: Git,
    bare: Path,
    scratch: Path,
    *,
    base: str,
    head_sha: str,
    method: MergeMethod,
    message: str,
    attempts: int = 3,
) -> str:
    """Merge ``head_sha`` into ``base`` with ``method`` and push; returns the new base tip.

    Squash: one new commit with ``message`` holding the whole change. Merge: a merge commit
    (``--no-ff``) with ``message``. Rebase: the head's commits replayed on the base
    (``message`` unused). Raises ``MergeConflict(files=[...])`` when the change does not
    apply, ``CodeHostUnavailable`` when the base kept moving for ``attempts`` tries.
    """
    for _ in range(attempts):
        async with scratch_dir(scratch) as tmp:
            work = tmp / "work"
            await clone(git, bare, work, base)
            seen = (await git.run("rev-parse", "HEAD", cwd=work)).stdout.strip()
            await _apply(git, work, base=base, head_sha=head_sha, method=method,
                         message=message)  # fmt: skip
            new_tip = (await git.run("rev-parse", "HEAD", cwd=work)).stdout.strip()
            pushed = await git.run(
                "push", "--quiet", "origin", f"HEAD:refs/heads/{base}", cwd=work, check=False
            )
            if pushed.ok:
                return new_tip
            if await rev_parse(git, bare, base) == seen:
                # The base did not move: the push failed for another reason.
                msg = "git push of the merge failed"
                raise GitFailed(msg, step="push", stderr=pushed.stderr[-2000:])
    msg = "the base branch kept moving during the merge: retry later"
    raise CodeHostUnavailable(msg, base=base, attempts=attempts)


async def _apply(
    git: Git, work: Path, *, base: str, head_sha: str, method: MergeMethod, message: str
) -> None:
    if method is MergeMethod.REBASE:
        await git.run("checkout", "--quiet", "--detach", head_sha, cwd=work)
        result = await git.run("rebase", "--quiet", base, cwd=work, check=False)
    elif method is MergeMethod.MERGE:
        result = await git.run(
            "merge", "--quiet", "--no-ff", "--no-edit", "-m", message, head_sha,
            cwd=work, check=False,
        )  # fmt: skip
    else:
        result = await git.run("merge", "--quiet", "--squash", head_sha, cwd=work, check=False)
    if not result.ok:
        files = await conflicted_files(git, work)
        if files:
            raise MergeConflict("the change does not apply cleanly to the base", files=files,
                                base=base)  # fmt: skip
        msg = f"git {method.value} failed"
        raise GitFailed(msg, step=method.value, stderr=(result.stderr or result.stdout)[-2000:])
    if method is MergeMethod.SQUASH:
        # --allow-empty: a head with nothing new still lands as the one promised commit.
        await git.run("commit", "--quiet", "--allow-empty", "-F", "-", cwd=work, input=message)
