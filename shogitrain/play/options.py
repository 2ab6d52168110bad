"""The engine's USI options: names, types, defaults and ranges, and their typed current values.

Names follow dlshogi where dlshogi has the option (``DNN_Model``, ``C_init``, ``Resign_Threshold``
…), with dlshogi's integer scales (``C_init`` 144 = 1.44, thresholds in per mille). The command
line sets the starting values (``shogitrain usi --option NAME=VALUE``), which ``usi`` reports as
the defaults, so a GUI shows them; ``setoption`` changes them. docs/play.md lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from shogitrain.play import PlayError
from shogitrain.play.search import SearchSettings


@dataclass(frozen=True)
class Option:
    name: str
    kind: str                  # spin | check | string | combo
    default: object
    min: int = 0
    max: int = 0
    choices: tuple = ()

    def usi_line(self, value) -> str:
        if self.kind == "spin":
            return f"option name {self.name} type spin default {value} min {self.min} max {self.max}"
        if self.kind == "check":
            return f"option name {self.name} type check default {'true' if value else 'false'}"
        if self.kind == "combo":
            return f"option name {self.name} type combo default {value} " + " ".join(f"var {c}" for c in self.choices)
        return f"option name {self.name} type string default {value if value != '' else '<empty>'}"

    def parse(self, text: str):
        """The typed value of ``text``; PlayError naming the option when it is not valid."""
        text = text.strip()
        if self.kind == "spin":
            try:
                value = int(text)
            except ValueError:
                raise PlayError(f"option {self.name}: {text!r} is not an integer") from None
            if not self.min <= value <= self.max:
                raise PlayError(f"option {self.name}: {value} is outside {self.min}…{self.max}")
            return value
        if self.kind == "check":
            if text.lower() not in ("true", "false"):
                raise PlayError(f"option {self.name}: expected true or false, got {text!r}")
            return text.lower() == "true"
        if self.kind == "combo" and text not in self.choices:
            raise PlayError(f"option {self.name}: {text!r} is not one of {', '.join(self.choices)}")
        return "" if text == "<empty>" else text


_D = SearchSettings()
OPTIONS = (
    Option("DNN_Model", "string", ""),                       # checkpoint or .onnx file
    Option("Device", "string", "auto"),                      # auto, cpu, cuda, cuda:N
    Option("Weights", "combo", "raw", choices=("raw", "averaged")),
    Option("Mode", "combo", "mcts", choices=("mcts", "policy")),
    Option("DNN_Batch_Size", "spin", 128, 1, 4096),
    Option("Threads", "spin", 0, 0, 1024),                   # CPU threads of the net; 0: the library's default
    Option("Const_Playout", "spin", 0, 0, 2_000_000_000),    # playouts per move, whatever the clock (0: off)
    Option("UCT_NodeLimit", "spin", 500_000, 1000, 2_000_000_000),   # about 1 KB a node
    Option("C_init", "spin", round(_D.c_init * 100), 0, 500),
    Option("C_base", "spin", int(_D.c_base), 10000, 100000),
    Option("C_fpu_reduction", "spin", round(_D.fpu_reduction * 100), 0, 100),
    Option("C_init_root", "spin", round(_D.c_init_root * 100), 0, 500),
    Option("C_base_root", "spin", int(_D.c_base_root), 10000, 100000),
    Option("C_fpu_reduction_root", "spin", round(_D.fpu_reduction_root * 100), 0, 100),
    Option("Softmax_Temperature", "spin", round(_D.softmax_temperature * 100), 1, 500),
    Option("Policy_Temperature", "spin", 0, 0, 1000),        # policy mode: 0 best move, else sample (÷100)
    Option("Random_Seed", "spin", 0, 0, 2_147_483_647),      # policy sampling; 0: fresh every game
    Option("Resign_Threshold", "spin", 10, 0, 1000),         # per mille
    Option("Draw_Value_Black", "spin", round(_D.draw_value_black * 1000), 0, 1000),
    Option("Draw_Value_White", "spin", round(_D.draw_value_white * 1000), 0, 1000),
    Option("Draw_Ply", "spin", _D.draw_ply, 0, 100000),
    Option("Leaf_Mate_Search_Depth", "spin", _D.leaf_mate_ply, 0, 7),
    Option("Root_Mate_Search_Depth", "spin", 3, 0, 7),
    Option("Byoyomi_Margin", "spin", 100, 0, 60000),
    Option("Time_Margin", "spin", 1000, 0, 600000),
    Option("PV_Interval", "spin", 500, 0, 600000),
    Option("ReuseSubtree", "check", _D.reuse_tree),
    Option("Net_Process", "check", False),                  # the net in a process of its own, overlapping the search
    Option("USI_Ponder", "check", False),
)
_BY_NAME = {o.name.lower(): o for o in OPTIONS}
# options whose change needs the model loaded again
MODEL_OPTIONS = ("DNN_Model", "Device", "Weights", "DNN_Batch_Size", "Threads", "Net_Process")


class EngineOptions:
    """Current values of every option, by name."""

    def __init__(self):
        self.values = {o.name: o.default for o in OPTIONS}

    def set(self, name: str, text: str) -> None:
        option = _BY_NAME.get(name.strip().lower())
        if option is None:
            raise PlayError(f"unknown option {name!r}")
        self.values[option.name] = option.parse(text)

    def __getitem__(self, name: str):
        return self.values[name]

    def usi_lines(self) -> list[str]:
        return [o.usi_line(self.values[o.name]) for o in OPTIONS]

    def model_key(self) -> tuple:
        return tuple(self.values[name] for name in MODEL_OPTIONS)

    def search_settings(self) -> SearchSettings:
        v = self.values
        leaf = v["Leaf_Mate_Search_Depth"]
        return SearchSettings(
            c_init=v["C_init"] / 100, c_base=float(v["C_base"]), fpu_reduction=v["C_fpu_reduction"] / 100,
            c_init_root=v["C_init_root"] / 100, c_base_root=float(v["C_base_root"]),
            fpu_reduction_root=v["C_fpu_reduction_root"] / 100,
            softmax_temperature=v["Softmax_Temperature"] / 100,
            draw_value_black=v["Draw_Value_Black"] / 1000, draw_value_white=v["Draw_Value_White"] / 1000,
            draw_ply=v["Draw_Ply"], leaf_mate_ply=leaf if leaf < 2 else leaf | 1,   # mate searches are odd
            reuse_tree=v["ReuseSubtree"])
