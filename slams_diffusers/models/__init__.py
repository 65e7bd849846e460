"""Diffusers models of SLAMS: state autoencoder (or level normaliser), observation encoders, score
network, and the Markov-blanket wrapper that composes window models over trajectories."""

from .level_normalizer import LevelNormalizer
from .markov_blanket import MarkovBlanketScore
from .observation_encoder import (
    ObservationEncoder,
    ObservationEncoderOutput,
    fuse_gaussians,
    fuse_likelihoods,
    fuse_posteriors,
)
from .score_net import ScoreNet, ScoreNetOutput
from .state_autoencoder import StateAutoencoder, StateAutoencoderOutput

__all__ = [
    "LevelNormalizer",
    "MarkovBlanketScore",
    "ObservationEncoder",
    "ObservationEncoderOutput",
    "ScoreNet",
    "ScoreNetOutput",
    "StateAutoencoder",
    "StateAutoencoderOutput",
    "fuse_gaussians",
    "fuse_likelihoods",
    "fuse_posteriors",
]
