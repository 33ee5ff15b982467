"""Every shell command in the README's and docs' fenced code blocks (bash, sh, shell, console) names
scripts and Python files that exist, and each flag it passes is an option of the parser that reads it:
`python X.py [subcommand] --flags`, `bash scripts/X.sh --flags` (the flags the script forwards to its
Python CLI), `torchrun ... X.py --flags`, `sbatch scripts/slurm_pretrain.sh RECIPE --flags`. A bash block
marked `<!-- runs in tests/test_docs_commands.py -->` is also run, as written, in an empty folder."""
import argparse
import glob
import importlib
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "pretrained_models/README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))
SHELL_BLOCK = re.compile(r"^```(bash|sh|shell|console)[ \t]*\n(.*?)^```", re.M | re.S)

# scripts that forward their extra arguments to a Python CLI; None: to something else (pytest), or nothing
SCRIPT_CLI = {"linear_eval.sh": "action_classification.py", "semi_supervised.sh": "action_classification.py",
              "transfer_pku2.sh": "action_classification.py", "knn_eval.sh": "knn_eval.py",
              "download_pretrained.sh": "download_pretrained.py", "test.sh": None, "demo.sh": None,
              "nw_ucla.sh": None}
SCRIPT_CLI.update({os.path.basename(p): "pretrain_cmd.py"
                   for p in glob.glob(os.path.join(REPO, "scripts", "pretrain_*.sh"))
                   if not p.endswith("pretrain_recipe.sh")})
# programs a documented command may start with besides python, bash, torchrun and sbatch
OTHER_PROGRAMS = {"pip", "cd", "export", "tensorboard", "sha256sum", "ls", "cat", "nvidia-smi", "git",
                  "mkdir"}


def shell_commands(text: str):
    """(block, simple command as a token list) for every command of every shell block."""
    for match in SHELL_BLOCK.finditer(text):
        lines = match.group(2).replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.strip()
            if match.group(1) == "console":
                if not line.startswith("$ "):
                    continue                                  # output lines
                line = line[2:]
            tokens = shlex.split(line, comments=True)
            command = []
            for tok in tokens + [";"]:
                if tok in (";", "&&", "||", "|"):
                    if command:
                        yield line, command
                    command = []
                else:
                    command.append(tok)


INLINE_COMMAND = re.compile(
    r"(?<!`)`((?:[A-Z_]+=\S+ )*(?:python3? |\.venv/bin/python |bash |torchrun |sbatch )[^`]+)`")


def inline_commands(text: str):
    """Commands written as inline code (`python prepare_data.py ntu60 --raw-dir DIR`) outside the fenced
    blocks; [optional] brackets are dropped, so `[--seed 0]` is checked as `--seed 0`."""
    prose = SHELL_BLOCK.sub("", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    for match in INLINE_COMMAND.finditer(prose):
        line = " ".join(match.group(1).replace("[", " ").replace("]", " ").split())
        yield line, shlex.split(line)


def documented_commands():
    out = []
    for doc in DOCS:
        with open(os.path.join(REPO, doc)) as f:
            text = f.read()
        for line, cmd in list(shell_commands(text)) + list(inline_commands(text)):
            out.append(pytest.param(cmd, id=f"{doc}: {line[:60]}"))
    return out


def parser_of(py_file: str) -> argparse.ArgumentParser:
    """The argument parser of a CLI (top level, or scripts/NAME.py): build_parser() when it has one, else
    the parser its main() builds (caught at parse_args, before the CLI does anything)."""
    folder, name = os.path.split(os.path.splitext(py_file)[0])
    if folder and os.path.join(REPO, folder) not in sys.path:       # scripts/NAME.py
        sys.path.insert(0, os.path.join(REPO, folder))
    module = importlib.import_module(name)
    if hasattr(module, "build_parser"):
        return module.build_parser()

    class Caught(Exception):
        pass

    def catch(self, *args, **kwargs):
        raise Caught(self)
    original = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = catch
    try:
        module.main([])
    except Caught as caught:
        return caught.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{py_file}: main() did not build an argument parser")


def check_flags(py_file: str, args: list, where: str) -> None:
    """Each option in `args` is known to the CLI's parser (and to its subcommand's, when it has them)."""
    if py_file == "evaluation.py":        # a library with one argument-less command: `summarise FILES`
        assert args[:1] == ["summarise"] and not any(a.startswith("-") for a in args), where
        return
    parser = parser_of(py_file)
    known = set(parser._option_string_actions)
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subparsers:
        sub = next((a for a in args if not a.startswith("-")), None)
        assert sub in subparsers[0].choices, f"{where}: {py_file} has no subcommand {sub!r}"
        known |= set(subparsers[0].choices[sub]._option_string_actions)
    for arg in args:
        if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", arg):
            flag = arg.split("=", 1)[0]
            assert flag in known, f"{where}: {py_file} has no option {flag} (see python {py_file} --help)"


def assert_exists(path: str, where: str) -> None:
    assert os.path.isfile(os.path.join(REPO, path)), f"{where}: {path} does not exist"


def check_script(script: str, args: list, where: str) -> None:
    assert script.startswith("scripts/"), f"{where}: run scripts as scripts/NAME.sh from the repository root"
    assert_exists(script, where)
    cli = SCRIPT_CLI.get(os.path.basename(script), "unknown")
    assert cli != "unknown", f"{where}: add {script} to SCRIPT_CLI here (which CLI gets its arguments)"
    if cli:
        check_flags(cli, [a for a in args if a.startswith("-")], where)


@pytest.mark.parametrize("cmd", documented_commands())
def test_documented_command_names_existing_files_and_known_flags(cmd):
    where = " ".join(cmd)
    while cmd and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", cmd[0]):     # VAR=value prefixes
        cmd = cmd[1:]
    program, args = os.path.basename(cmd[0]), cmd[1:]
    if re.fullmatch(r"python(3(\.\d+)?)?", program):
        if args[:1] == ["-m"]:
            assert args[1] in {"venv", "pip", "pytest", "torch.distributed.run"}, where
            return
        assert args and args[0].endswith(".py"), f"{where}: expected python FILE.py"
        assert_exists(args[0], where)
        check_flags(args[0], args[1:], where)
    elif program == "bash":
        check_script(args[0], args[1:], where)
    elif program == "torchrun":
        py = next(a for a in args if a.endswith(".py"))
        assert_exists(py, where)
        check_flags(py, args[args.index(py) + 1:], where)
    elif program == "sbatch":
        script = next(a for a in args if a.endswith(".sh"))
        assert script == "scripts/slurm_pretrain.sh", where
        assert_exists(script, where)
        rest, recipe = args[args.index(script) + 1:], "pretrain_ntu60_xsub.sh"     # the script's default
        if rest and not rest[0].startswith("-"):
            recipe, rest = rest[0], rest[1:]
        check_script(f"scripts/{recipe}", rest, where)
    else:
        assert program in OTHER_PROGRAMS, f"{where}: unknown program {program!r} (extend OTHER_PROGRAMS)"


def test_the_extraction_finds_the_commands_that_matter():
    """The test above must see the README's main commands, or it checks nothing."""
    with open(os.path.join(REPO, "README.md")) as f:
        found = [" ".join(c[:2]) for _, c in shell_commands(f.read())]
    for expected in ("bash scripts/demo.sh", "bash scripts/test.sh", "bash scripts/download_pretrained.sh",
                     "sbatch --nodes=2"):
        assert expected in found, (expected, found)
    assert len(documented_commands()) >= 30


def test_the_checks_reject_unknown_flags_and_missing_files():
    with pytest.raises(AssertionError, match="no option --hidden"):
        check_flags("action_classification.py", ["--hidden", "8"], "x")
    with pytest.raises(AssertionError, match="no subcommand 'ntu70'"):
        check_flags("prepare_data.py", ["ntu70"], "x")
    with pytest.raises(AssertionError, match="does not exist"):
        check_script("scripts/no_such.sh", [], "x")
    check_flags("prepare_data.py", ["ntu60", "--raw-dir", "raw"], "x")
    check_flags("benchmark.py", ["train", "--steps", "3"], "x")


RUNNABLE = re.compile(r"^<!-- runs in tests/test_docs_commands.py -->\n(```bash[ \t]*\n.*?^```)", re.M | re.S)


def runnable_blocks():
    out = []
    for doc in DOCS:
        with open(os.path.join(REPO, doc)) as f:
            out += [pytest.param(block, id=doc) for block in RUNNABLE.findall(f.read())]
    return out


def test_the_runnable_examples_are_found():
    assert any(p.id == "docs/data.md" for p in runnable_blocks())     # "Your own skeletons"


@pytest.mark.parametrize("block", runnable_blocks())
def test_a_runnable_example_runs_as_written(block, tmp_path):
    """Each command of the block runs in a fresh folder (holding only a link to docs/), with this Python,
    one after the other, each ending with status 0."""
    os.symlink(os.path.join(REPO, "docs"), tmp_path / "docs")
    commands = [cmd for _, cmd in shell_commands(block)]
    assert commands
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for cmd in commands:
        assert re.fullmatch(r"python3?", cmd[0]) and cmd[1].endswith(".py"), cmd
        result = subprocess.run([sys.executable, os.path.join(REPO, cmd[1]), *cmd[2:]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{' '.join(cmd)}: {result.stderr[-2000:]}"
