"""Interactive chat loop. Decoding can be changed while it runs:

    /set temperature 0.2     change one parameter (any DecodingParams field, or `preset ie`)
    /show                    print the current parameters
    /reset                   forget the conversation history
    /help                    list commands
    /quit                    leave (so does end of input, Ctrl-D)

Answers stream as they are generated; Ctrl-C stops the answer, not the session. In a terminal, lines
are edited with readline (arrows, Ctrl-A/E, ...) and kept in a history file across sessions
(``~/.knowlm_chat_history``, or ``$KNOWLM_CHAT_HISTORY``); any other stdin is read line by line, so
scripts and tests drive it through a pipe.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable, TextIO

from knowlm.errors import KnowlmError
from knowlm.decoding import DecodingParams, preset
from knowlm.infer.generator import TextGenerator

HELP = __doc__.split("\n\n")[1]


class ChatSession:
    """One conversation: history (for instruction models) plus mutable decoding parameters."""

    def __init__(self, generator: TextGenerator, params: DecodingParams, system: str | None = None, keep_history: bool = True):
        self.generator = generator
        self.params = params
        self.system = system
        self.keep_history = keep_history and generator.template != "raw"
        self.history: list[tuple[str, str]] = []

    def command(self, line: str) -> str | None:
        """Handle a /command; returns the text to print, or None to quit."""
        name, _, rest = line[1:].partition(" ")
        if name in ("quit", "exit", "q"):
            return None
        if name == "show":
            return json.dumps(self.params.to_dict(), ensure_ascii=False)
        if name == "reset":
            self.history.clear()
            return "history cleared"
        if name == "set":
            key, _, value = rest.strip().partition(" ")
            if not key or not value:
                return "usage: /set NAME VALUE (e.g. /set temperature 0.2)"
            try:
                if key == "preset":
                    self.params = preset(value.strip())
                else:
                    parsed = json.loads(value) if key == "stop" and value.strip().startswith("[") else value.strip()
                    self.params = self.params.updated(**{key: parsed})
            except KnowlmError as exc:
                return f"error: {exc}"
            return f"{key} = {value.strip()}"
        return HELP

    def reply(self, message: str, on_text: Callable[[str], None] | None = None) -> str:
        """The answer to ``message``; with ``on_text`` (and a generator that streams) its text is passed
        on piece by piece as it is generated. An interrupted answer is not kept in the history."""
        prompt = self.generator.prompt(message, "", self.system, self.history if self.keep_history else ())
        stream = getattr(self.generator, "stream", None)
        if on_text is not None and stream is not None:
            started = [False]

            def forward(piece: str) -> None:  # the answer is shown stripped, as it is returned
                if not started[0]:
                    piece = piece.lstrip()
                    started[0] = bool(piece)
                if piece:
                    on_text(piece)

            answer = stream(prompt, self.params, forward).text.strip()
        else:
            answer = self.generator.generate([prompt], self.params)[0].text.strip()
            if on_text is not None:
                on_text(answer)
        if self.keep_history:
            self.history.append((message, answer))
        return answer


class _PipedLines:
    """Lines from any text stream (scripts, tests)."""

    def __init__(self, stdin: TextIO, stdout: TextIO):
        self.stdin, self.stdout = stdin, stdout

    def read(self, prompt: str) -> str:
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line


class _TerminalLines:
    """Lines typed at a terminal: readline editing, and history kept in a file across sessions."""

    def __init__(self, history_file: Path):
        import readline

        self.readline, self.history_file = readline, history_file
        readline.set_history_length(1000)
        try:
            readline.read_history_file(history_file)
        except OSError:  # first session, or an unreadable file: start empty
            pass

    def read(self, prompt: str) -> str:
        line = input(prompt)
        try:
            self.readline.write_history_file(self.history_file)
        except OSError:
            pass
        return line


def history_path() -> Path:
    return Path(os.environ.get("KNOWLM_CHAT_HISTORY") or Path.home() / ".knowlm_chat_history")


def run_chat(session: ChatSession, stdin: TextIO, stdout: TextIO) -> int:
    """The REPL; returns how many messages were answered."""
    lines = _TerminalLines(history_path()) if stdin is sys.stdin and stdin.isatty() else _PipedLines(stdin, stdout)
    answered = 0
    stdout.write("knowlm chat: type a message, /help for commands, /quit to leave; Ctrl-C stops an answer\n")

    def show(piece: str) -> None:
        stdout.write(piece)
        stdout.flush()

    while True:
        try:
            line = lines.read(">>> ")
        except KeyboardInterrupt:  # at the prompt: drop the line, keep the session
            stdout.write("\n")
            continue
        except EOFError:
            stdout.write("\n")
            return answered
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            out = session.command(line)
            if out is None:
                return answered
            stdout.write(out + "\n")
            continue
        try:
            session.reply(line, on_text=show)
        except KeyboardInterrupt:
            stdout.write("\n[stopped]\n")
            continue
        stdout.write("\n")
        stdout.flush()
        answered += 1
