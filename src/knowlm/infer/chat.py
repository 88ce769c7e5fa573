"""Interactive chat loop. Decoding can be changed while it runs:

    /set temperature 0.2     change one parameter (any DecodingParams field, or `preset ie`)
    /show                    print the current parameters
    /reset                   forget the conversation history
    /help                    list commands
    /quit                    leave (so does end of input)

Reads lines from any text stream so scripts and tests can drive it through stdin.
"""

from __future__ import annotations

import json
from typing import TextIO

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

    def reply(self, message: str) -> str:
        prompt = self.generator.prompt(message, "", self.system, self.history if self.keep_history else ())
        answer = self.generator.generate([prompt], self.params)[0].text.strip()
        if self.keep_history:
            self.history.append((message, answer))
        return answer


def run_chat(session: ChatSession, stdin: TextIO, stdout: TextIO) -> int:
    """The REPL; returns how many messages were answered."""
    answered = 0
    stdout.write("knowlm chat: type a message, /help for commands, /quit to leave\n")
    while True:
        stdout.write(">>> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
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
        stdout.write(session.reply(line) + "\n")
        stdout.flush()
        answered += 1
