"""checkin-bot: SMS and WhatsApp check-ins for people living with spinal cancer."""
