#!/usr/bin/env python
"""manage.py for the test project (subprocess tests)."""

import sys

from django.core.management import execute_from_command_line

if __name__ == "__main__":
    execute_from_command_line(sys.argv)
