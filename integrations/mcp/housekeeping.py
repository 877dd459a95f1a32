"""The bundled housekeeping MCP server: current date/time, a safe calculator, unit conversion.

Run it over stdio (the default; the app starts it by itself) or over streamable HTTP:

    python -m integrations.mcp.housekeeping                      # stdio
    python -m integrations.mcp.housekeeping --http --port 8765   # http://127.0.0.1:8765/mcp

It needs no Django and no network, and every tool is read-only (no approval asked by default).
"""

import argparse
import ast
import math
import operator
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("housekeeping", instructions="Date/time, arithmetic and unit conversion.")
READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)


@server.tool(annotations=READ_ONLY)
def current_time(timezone: str = "UTC") -> str:
    """The current date and time in an IANA timezone such as "Europe/Paris" (default UTC)."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"Unknown timezone {timezone!r}; use a name like Europe/Paris") from None
    now = datetime.now(zone)
    return f"{now:%A, %d %B %Y, %H:%M:%S} {timezone} (UTC{now:%z}); ISO {now.isoformat()}"


# Calculator: the expression is parsed, never evaluated as Python. Only number literals,
# arithmetic operators, a few math functions and constants are allowed, with size limits so a
# request cannot make the server compute forever.
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}  # fmt: skip
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "sin": math.sin, "cos": math.cos, "tan": math.tan, "log": math.log,
    "log10": math.log10, "exp": math.exp, "abs": abs, "round": round, "floor": math.floor,
    "ceil": math.ceil,
}  # fmt: skip
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION = 300
MAX_MAGNITUDE = 1e100


def safe_eval(expression: str) -> float | int:
    if len(expression) > MAX_EXPRESSION:
        raise ValueError(f"Expression longer than {MAX_EXPRESSION} characters")
    tree = ast.parse(expression.replace("^", "**"), mode="eval")
    return _eval(tree.body)


def _eval(node: ast.AST) -> float | int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ValueError("Not a number")
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or abs(left) > 1e6):
            raise ValueError("Exponent or base too large")
        result = _BINARY[type(node.op)](left, right)
        if isinstance(result, complex) or abs(result) > MAX_MAGNITUDE:
            raise ValueError("Result out of range")
        return result
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and 1 <= len(node.args) <= 2
    ):
        return _FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    raise ValueError(f"Not allowed in an expression: {ast.unparse(node)!r}")


@server.tool(annotations=READ_ONLY)
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression: + - * / // % ** (or ^), parentheses, pi, e and
    sqrt, sin, cos, tan, log, log10, exp, abs, round, floor, ceil."""
    try:
        result = safe_eval(expression)
    except ZeroDivisionError:
        raise ToolError("Division by zero") from None
    except SyntaxError:
        raise ToolError(f"Not an arithmetic expression: {expression!r}") from None
    except (ValueError, OverflowError, TypeError) as exc:
        # Tool errors (unlike other exceptions) reach the model with their message.
        raise ToolError(str(exc)) from None
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        result = int(result)
    return (
        f"{expression} = {result:.12g}" if isinstance(result, float) else f"{expression} = {result}"
    )


# Units: each dimension has a base unit and factors to it. Temperature is affine, handled apart.
_UNITS: dict[str, dict[str, float]] = {
    "length": {
        "m": 1, "km": 1000, "cm": 0.01, "mm": 0.001, "mi": 1609.344, "yd": 0.9144,
        "ft": 0.3048, "in": 0.0254, "nmi": 1852,
    },
    "mass": {"kg": 1, "g": 0.001, "mg": 1e-6, "t": 1000, "lb": 0.45359237, "oz": 0.028349523125},
    "volume": {
        "l": 1, "ml": 0.001, "m3": 1000, "gal": 3.785411784, "qt": 0.946352946,
        "pt": 0.473176473, "cup": 0.2365882365, "floz": 0.0295735295625,
    },
    "time": {"s": 1, "ms": 0.001, "min": 60, "h": 3600, "day": 86400, "week": 604800},
    "speed": {"m/s": 1, "km/h": 1 / 3.6, "mph": 0.44704, "kn": 1852 / 3600},
    "data": {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 1024, "mib": 1024**2,
             "gib": 1024**3},
}  # fmt: skip
_TEMPERATURE = {"c", "f", "k"}


def convert(value: float, from_unit: str, to_unit: str) -> float:
    src, dst = from_unit.strip().lower(), to_unit.strip().lower()
    if src in _TEMPERATURE and dst in _TEMPERATURE:
        kelvin = {"c": value + 273.15, "f": (value - 32) * 5 / 9 + 273.15, "k": value}[src]
        return {"c": kelvin - 273.15, "f": (kelvin - 273.15) * 9 / 5 + 32, "k": kelvin}[dst]
    for units in _UNITS.values():
        if src in units and dst in units:
            return value * units[src] / units[dst]
    raise ValueError(f"Cannot convert {from_unit!r} to {to_unit!r}")


@server.tool(annotations=READ_ONLY)
def convert_units(value: float, from_unit: str, to_unit: str) -> str:
    """Convert a value between units of length (m km cm mm mi yd ft in nmi), mass (kg g mg t lb
    oz), volume (l ml m3 gal qt pt cup floz), time (s ms min h day week), speed (m/s km/h mph
    kn), data (b kb mb gb tb kib mib gib) or temperature (c f k)."""
    try:
        result = convert(value, from_unit, to_unit)
    except ValueError as exc:
        raise ToolError(str(exc)) from None
    return f"{value:g} {from_unit} = {result:.6g} {to_unit}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
