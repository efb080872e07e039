"""mobile_vla_ros: record, train and drive a language-conditioned mobile robot policy."""

__version__ = "0.1.0"
