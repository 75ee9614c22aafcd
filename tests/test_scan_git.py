"""``flask keys scan --git``: keys anywhere in a repository's history, and
``--check`` / ``--revoke`` against the app (SPEC §14)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_keyauth import KeyAuth, keys
from flask_keyauth.scan import scan_git

from .conftest import bearer, service_of

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "dev", "GIT_AUTHOR_EMAIL": "dev@example.com",
        "GIT_COMMITTER_NAME": "dev", "GIT_COMMITTER_EMAIL": "dev@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    }  # fmt: skip
    done = subprocess.run(  # noqa: S603
        ["git", "-C", str(repo), *args],  # noqa: S607
        check=True, capture_output=True, text=True, env=env,
    )
    return done.stdout.strip()


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def history(tmp_path: Path, committed: str, on_branch: str) -> tuple[Path, str, str]:
    """A repository where ``committed`` was added then deleted on main, and
    ``on_branch`` lives only on another branch: (repo, sha1, sha2)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("hello\n")
    commit(repo, "start")
    (repo / "config").mkdir()
    (repo / "config" / "settings.py").write_text(f'DEBUG = True\n\nAPI_KEY = "{committed}"\n')
    added = commit(repo, "add settings")
    (repo / "config" / "settings.py").write_text('DEBUG = True\n\nAPI_KEY = os.environ["KEY"]\n')
    commit(repo, "read the key from the environment")
    git(repo, "checkout", "-q", "-b", "feature")
    # An added line that itself reads like a diff header is still content.
    (repo / "deploy env.txt").write_text(f"++ {on_branch}\n")
    branch = commit(repo, "deploy notes")
    git(repo, "checkout", "-q", "main")
    assert committed not in (repo / "config" / "settings.py").read_text()
    return repo, added, branch


def redacted(text: str) -> str:
    parsed = keys.parse(text)
    assert parsed is not None
    return keys.redact(parsed.prefix, parsed.environment, parsed.key_id, text[-4:])


def test_history_finds_deleted_keys_and_other_branches(tmp_path: Path) -> None:
    first, second = keys.generate().text, keys.generate("sk", "test").text
    repo, added, branch = history(tmp_path, first, second)
    findings = scan_git(str(repo))
    assert [(f.commit, f.path, f.line, f.redacted) for f in findings] == [
        (branch, "deploy env.txt", 1, redacted(second)),
        (added, "config/settings.py", 3, redacted(first)),
    ] or [(f.commit, f.path, f.line, f.redacted) for f in findings] == [
        (added, "config/settings.py", 3, redacted(first)),
        (branch, "deploy env.txt", 1, redacted(second)),
    ]
    assert str(findings[0]).startswith(f"{findings[0].commit[:12]}:")
    assert first not in repr(findings) and second not in repr(findings)
    # The working tree alone is clean: only the history holds them.
    runner_result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "flask_keyauth.scan", str(repo)], capture_output=True, text=True
    )
    assert runner_result.returncode == 0, runner_result.stdout


def test_scan_git_without_an_app_prints_redacted_findings(tmp_path: Path) -> None:
    first, second = keys.generate().text, keys.generate().text
    repo, added, _ = history(tmp_path, first, second)
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "flask_keyauth.scan", "--git", str(repo)],
        capture_output=True, text=True,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert f"{added[:12]}:config/settings.py:3: {redacted(first)}" in lines
    assert len(lines) == 2
    assert first not in done.stdout + done.stderr and second not in done.stdout + done.stderr
    assert "2 API key(s) found" in done.stderr
    # No path: the current directory.
    here = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "flask_keyauth.scan", "--git"],
        capture_output=True, text=True, cwd=repo,
    )
    assert here.returncode == 1 and here.stdout == done.stdout.replace(str(repo) + "/", "")


def test_a_folder_that_is_no_repository_is_one_line_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "flask_keyauth.scan", "--git", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "GIT_CEILING_DIRECTORIES": "/"},
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and "git repository" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_and_revoke_ask_the_app(app: Flask, keyauth: KeyAuth, tmp_path: Path) -> None:
    with app.app_context():
        live, live_secret = keyauth.create_key("acme", "pushed")
        gone, gone_secret = keyauth.create_key("acme", "pushed, revoked")
        keyauth.revoke_key(gone.id)
    stranger = keys.generate().text  # of our format, not of this app
    repo, added, branch = history(tmp_path, live_secret, gone_secret)
    (repo / "notes.md").write_text(f"old key: {stranger}\n")
    commit(repo, "notes")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["keys", "scan", "--git", "--check", str(repo)])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"{added[:12]}:config/settings.py:3: {live.redacted} (active)" in out.splitlines()
    assert f"{gone.redacted} (revoked)" in out
    assert f"{redacted(stranger)} (not a key of this app)" in out
    for secret in (live_secret, gone_secret, stranger):
        assert secret not in result.output
    client = app.test_client()
    assert client.get("/read", headers=bearer(live_secret)).status_code == 200

    result = runner.invoke(args=["keys", "scan", "--git", "--revoke", str(repo)])
    assert result.exit_code == 1
    assert f"{live.redacted} (revoked now)" in result.stdout
    assert client.get("/read", headers=bearer(live_secret)).status_code == 401
    with app.app_context():
        trail = service_of(app).events("acme", live.id)
    [leaked] = [e for e in trail if e.action == "leaked"]
    assert leaked.detail == f"{added[:12]}:config/settings.py:3" and leaked.actor == "cli"
    # Again: nothing new to revoke, nothing recorded twice.
    result = runner.invoke(args=["keys", "scan", "--git", "--revoke", str(repo)])
    assert f"{live.redacted} (revoked)" in result.stdout
    with app.app_context():
        trail = service_of(app).events("acme", live.id)
    assert len([e for e in trail if e.action == "leaked"]) == 1


def test_check_needs_an_app(tmp_path: Path) -> None:
    repo, _, _ = history(tmp_path, keys.generate().text, keys.generate().text)
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "flask_keyauth.scan", "--git", "--check", str(repo)],
        capture_output=True, text=True, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "FLASK_APP"},
    )
    assert done.returncode == 2, done.stdout
    assert "need the app" in done.stderr and "Traceback" not in done.stderr


def test_pre_commit_hook_recipe_blocks_a_commit_with_a_key(tmp_path: Path, **_: Any) -> None:
    """The documented hook: ``flask_keyauth.scan`` on the staged files."""
    repo = tmp_path / "hooked"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text(
        "#!/bin/sh\n"
        "git diff --cached --name-only --diff-filter=ACM -z"
        f" | xargs -0 --no-run-if-empty {sys.executable} -m flask_keyauth.scan\n"
    )
    hook.chmod(0o755)
    (repo / "ok.txt").write_text("nothing to see\n")
    commit(repo, "clean")
    (repo / "secret.env").write_text(f"KEY={keys.generate().text}\n")
    git(repo, "add", "secret.env")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        git(repo, "commit", "-q", "-m", "oops")
    assert "API key(s) found" in refused.value.stderr
