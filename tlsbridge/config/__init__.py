"""The config file: YAML -> typed, frozen values (model), read and validated by the parser.

`load(path)` and `parse(text)` raise ConfigError with one line naming the file, the key path and
the problem; loading never writes anything.
"""

from tlsbridge.config.model import (
    CHALLENGE_KEYS,
    DIRECTORY_ALIASES,
    KEY_TYPES,
    METHODS,
    AcmeConfig,
    CaConfig,
    CertbotConfig,
    ChallengeConfig,
    Config,
    DaemonTlsConfig,
    DiscoveryConfig,
    DockerConfig,
    Eab,
    PublishConfig,
    ReloadTarget,
    RenewalConfig,
    Site,
    StateConfig,
)
from tlsbridge.config.parser import default_config_path, load, parse

__all__ = [
    "AcmeConfig",
    "CHALLENGE_KEYS",
    "CaConfig",
    "CertbotConfig",
    "ChallengeConfig",
    "Config",
    "DIRECTORY_ALIASES",
    "DaemonTlsConfig",
    "DiscoveryConfig",
    "DockerConfig",
    "Eab",
    "KEY_TYPES",
    "METHODS",
    "PublishConfig",
    "ReloadTarget",
    "RenewalConfig",
    "Site",
    "StateConfig",
    "default_config_path",
    "load",
    "parse",
]
