"""A small package for Orion's examples: it greets whoever is named."""

import sys


def greeting(name: str) -> str:
    name = name.strip()
    return f"Hello, {name}!" if name else "Hello, world!"


def main() -> None:
    print(greeting(sys.argv[1] if len(sys.argv) > 1 else ""))
