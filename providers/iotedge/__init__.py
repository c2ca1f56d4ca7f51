"""Azure IoT Edge target (``provider: iotedge``): services as modules on devices, via IoT Hub deployments."""

from .provider import IotEdgeProvider

__all__ = ["IotEdgeProvider"]
