"""openimds configuration: OpenStack-style ini files through oslo.config.

    load_config(service, config_files, config_dirs=()) -> oslo_config.cfg.ConfigOpts

returns a fresh ConfigOpts (never the global CONF) holding the options of one service in
SERVICES, with every value already validated. Upstream option names and sections are used;
spellings from older releases (the seeds' files) load as deprecated aliases. Errors:

    ConfigError        file, section, option, message; str() is one line

`inspect_config` returns the same ConfigOpts with the findings (deprecated names, unknown
options) and where each option was set; `openimds config check` is built on it.
"""

from openimds.config._load import (
    ConfigError,
    Finding,
    LoadedConfig,
    Origin,
    database_url,
    inspect_config,
    load_config,
)
from openimds.config.services import SERVICES, registrations

__all__ = [
    "SERVICES",
    "ConfigError",
    "Finding",
    "LoadedConfig",
    "Origin",
    "database_url",
    "inspect_config",
    "load_config",
    "registrations",
]
