"""Face reconstruction from one portrait (Dib et al. 2021 in spirit): a CNN fast path trained on
the virtual light stage, pose and shape from its landmarks, and the ray-traced photometric fit of
light-stage light and albedo with self-shadows."""

from functools import lru_cache

from .cnn import ReconCNN, load_recon_cnn, save_recon_cnn
from .pose_fit import PoseFit, fit_pose_shape
from .reconstruction import Reconstruction, light_to_envmap, reconstruct

RECON_FILE = "lightstage_recon.pt"


@lru_cache(maxsize=1)
def default_cnn() -> ReconCNN:
    """The bundled fast-path network."""
    from ..bundled import bundled

    path = bundled(RECON_FILE)
    if path is None:
        raise FileNotFoundError(f"the bundled {RECON_FILE} is missing; train one with `stylerelight train recon` "
                                "and pass it as cnn=load_recon_cnn(path)")
    return load_recon_cnn(path)


__all__ = ["PoseFit", "ReconCNN", "Reconstruction", "default_cnn", "fit_pose_shape", "light_to_envmap",
           "load_recon_cnn", "reconstruct", "save_recon_cnn"]
