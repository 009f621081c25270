"""Test this checkout's source, whatever the venv has installed.

``hack/mlflow-venv.sh`` installs the plugin editable, which points at the checkout that built the
venv; a venv copied into another worktree would otherwise test that other checkout's code.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
