"""Shared pytest setup: quiet logs, the simulator seed options."""

from __future__ import annotations

import logging

import structlog

# Library code logs with structlog; keep test output to warnings and worse.
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
