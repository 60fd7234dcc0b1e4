"""Simulated citizens, devices and screens that publish over real MQTT, exactly like devices do."""
