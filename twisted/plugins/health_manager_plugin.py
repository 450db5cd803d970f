from twisted.application.service import ServiceMaker

health_manager = ServiceMaker(
    "health_manager",
    "health_manager.tap",
    "Cloud Foundry Health Manager 2.0 (DEA backend)",
    "health_manager",
)
