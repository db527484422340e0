"""The Streamlit page of the app (lib/deploy/app.py); started by ./app.sh or python -m lib.deploy.app.

A file of its own outside lib/: Streamlit puts the folder of the file it runs on sys.path, and lib/'s
module names (config, models, ...) must not shadow other packages' modules.
"""

import sys

from lib.deploy.app import page, parse_args

page(parse_args(sys.argv[1:]))
