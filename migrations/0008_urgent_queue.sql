-- Emergency-button presses are evaluated before the rest of the queue: behind a backlog of
-- readings a press must not wait its turn. This index finds them without scanning the queue.
CREATE INDEX evaluation_queue_urgent ON evaluation_queue (id)
    WHERE source = 'event' AND name = 'emergency_button';
