"""Diffusers models of SLAMS: state autoencoder, observation encoders, score network."""

from .observation_encoder import ObservationEncoder, ObservationEncoderOutput, fuse_gaussians
from .score_net import ScoreNet, ScoreNetOutput
from .state_autoencoder import StateAutoencoder, StateAutoencoderOutput

__all__ = [
    "ObservationEncoder",
    "ObservationEncoderOutput",
    "ScoreNet",
    "ScoreNetOutput",
    "StateAutoencoder",
    "StateAutoencoderOutput",
    "fuse_gaussians",
]
