"""Thin command lines (tyro). Importing this package first silences the deprecation warnings that third-party
imports print at start-up (torch, nerfstudio), so the first line a user sees is ours; our own warnings still show."""

from crossfire_ns.scripts.quiet import quiet_third_party_warnings

quiet_third_party_warnings()
