"""Service images, one capability shared by every target that runs containers.

``capability.ImageTarget`` is what a provider mixes in; ``recipe`` says what goes into an image and
under which content-addressed name, ``build`` builds and pushes it through the Docker engine
(``engine``) with a kept log, ``pipconf`` carries the host's pip settings into the package stage
only, and ``builder`` ties them together for one project and one registry. No provider package is
imported from here: docker, aci, kubernetes and iotedge all import this one.
"""

from .build import REGISTRY_PASSWORD_ENV, REGISTRY_USER_ENV, BuiltImage, registry_auth
from .builder import ImageBuilder
from .capability import ImageTarget, pull_credentials
from .recipe import APP_ROOT, DEFAULT_BASE_IMAGE, VENV

__all__ = ["APP_ROOT", "DEFAULT_BASE_IMAGE", "REGISTRY_PASSWORD_ENV", "REGISTRY_USER_ENV", "VENV", "BuiltImage",
           "ImageBuilder", "ImageTarget", "pull_credentials", "registry_auth"]
