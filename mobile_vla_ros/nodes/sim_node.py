"""sim_node: the simulated room as ROS topics, so the real nodes can drive it.

Subscribes ``cmd_vel`` (geometry_msgs/Twist: linear.x forward, linear.y left; angular.z is
ignored, the simulated robot keeps facing forward). Publishes ``camera/image_raw``
(sensor_msgs/Image rgb8), ``sim/pose`` (geometry_msgs/PoseStamped) and ``sim/result``
(std_msgs/String JSON, latched: outcome, time, position, layout, episode). ``sim/reset``
(std_srvs/Trigger) starts the next randomised layout of the series chosen by ``seed``; with
``next_episode_on_end`` (drive.launch.py sets it) the node does so itself ``NEXT_EPISODE_PAUSE_S``
after an episode ends, so a person can keep trying the instruction topic live.

The simulation runs in step with the node's clock: before every camera frame and pose the world
is advanced to "now", so each header stamp is the time the pictured state was reached. A
``cmd_vel`` older than ``cmd_timeout_s`` counts as zero: the robot stops rather than coasting on
a command nobody is sending any more. After ``sim/reset`` the robot stays at the start for
``start_hold_s`` (commands are ignored, the camera already shows the new layout, the episode's
time starts after it): time for the drive nodes to fill their window with the new layout.

With ``lockstep`` the node owns the time: it publishes ``/clock`` (run the other nodes with
``use_sim_time:=true``) and advances it one physics step (1 / ``physics_rate_hz``, which must be
the inference node's control period) at a time, each only after the pipeline has answered:

1. clock to t, integrate the robot over the last step with the command in force, publish the pose;
2. once commands flow (the first ``cmd_vel`` seen), wait for the ``cmd_vel`` of the control
   tick at t (one message per step);
3. on a camera step, publish the frame of t and, once windows flow (the first
   ``window/answered`` seen), wait until inference_node has answered it on ``window/answered``
   (its chunk is in force from the next control tick).

An instruction switch can be part of the handshake: a JSON message ``{"time_s": t, "instruction":
text}`` on ``sim/instruction_at`` makes the node publish ``text`` on ``instruction`` just before
its clock reaches t, and hold the clock until ``instruction/active`` confirms a switch (however long
that takes on a busy machine; the node warns, as for the other answers). Every window from t on
then runs under the new prompt, on any machine;
published by a conductor on its own, the switch would land a tick or two apart from run to run.
A reset cancels a switch still pending.

Until a path flows, time runs at the real-time cap instead of waiting on it: the inference node
sends one ``cmd_vel`` per simulated control tick, so a first one published before its publisher
had matched this node's subscription would be lost and the clock would stand for ever (seen
once in CI: two loops starting side by side on a loaded 2-core machine).

A slow or loaded machine runs the same episode, only slower: what the robot does no longer
depends on how fast the nodes are. ``camera_rate_hz`` must then be the model's frame rate
(1 / action_dt), so that every frame becomes a window; a frame nobody answers stops the clock,
and the node warns. ``max_real_time_factor`` caps how fast simulated time may run.
"""

from __future__ import annotations

import functools
import json
import math
import time

from geometry_msgs.msg import PoseStamped, Twist
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, TimeReference
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mobile_vla_ros.errors import MobileVlaError
from mobile_vla_ros.nodes.parameters import accept_changes, declare_parameters
from mobile_vla_ros.nodes.process import run_node
from mobile_vla_ros.nodes.ros_image import rgb_to_image_msg
from mobile_vla_ros.nodes.sim_tables import (
    CAMERA,
    CLOCK,
    CMD_VEL,
    INSTRUCTION,
    INSTRUCTION_ACTIVE,
    INSTRUCTION_AT,
    INTERFACES,  # noqa: F401 (with PARAMETERS: the tables scripts/reference.py and test_interfaces.py read here)
    PARAMETERS,
    POSE,
    RESET,
    RESULT,
    WINDOW_ANSWERED,
    check_positive,
    check_scene,
)
from mobile_vla_ros.sim.live_episode import LiveEpisode
from mobile_vla_ros.sim.render import SCENES, CameraConfig, Renderer
from mobile_vla_ros.sim.world import RoomConfig, World, sample_layout

NEXT_EPISODE_PAUSE_S = 1.0  # next_episode_on_end: the end stays on camera this long
LOCKSTEP_PATIENCE_S = 10.0  # lockstep: warn when the pipeline has not answered for this long
LOCKSTEP_RECHECK_S = 0.5  # lockstep: /clock republished this often while waiting


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_node", **kwargs)
        self.p = p = declare_parameters(self, PARAMETERS)
        for rate in ("physics_rate_hz", "camera_rate_hz", "cmd_timeout_s", "max_real_time_factor"):
            check_positive(rate, getattr(p, rate))
        if p.first_episode < 0:
            raise MobileVlaError(f"parameter first_episode must be >= 0, got {p.first_episode}")
        check_scene("scene", p.scene)
        # `ros2 param set` on these: checked as at start, then read from self.p where they are used
        checks = {"seed": None, "cmd_timeout_s": check_positive, "freeze_camera": None, "scene": check_scene}
        accept_changes(
            self, PARAMETERS, {name: functools.partial(self._setting, name, check) for name, check in checks.items()}
        )
        if p.start_hold_s < 0:
            raise MobileVlaError(f"parameter start_hold_s must be >= 0, got {p.start_hold_s}")
        self._lockstep = bool(p.lockstep)
        if self._lockstep and self.get_parameter("use_sim_time").value:
            raise MobileVlaError("lockstep: sim_node publishes /clock itself; do not set its use_sim_time")
        self._step_ns = round(1e9 / p.physics_rate_hz)
        self._camera_steps = round(1e9 / p.camera_rate_hz) / self._step_ns
        if self._lockstep and abs(self._camera_steps - round(self._camera_steps)) > 1e-6:
            raise MobileVlaError(
                f"lockstep: the camera period (1/{p.camera_rate_hz} s) must be a whole number of "
                f"physics steps (1/{p.physics_rate_hz} s)"
            )
        self._camera_steps = max(1, round(self._camera_steps))
        self._sim_ns = 0  # lockstep: the simulated time
        self._awaiting = None  # lockstep: "cmd_vel" or "answer" while the pipeline has not answered
        self._commands_flow = False  # lockstep: a cmd_vel has arrived, so the clock may wait for the next
        self._instruction_at: tuple[int, str] | None = None  # lockstep: (sim ns, text) of a switch to publish
        self._next_on_end = bool(p.next_episode_on_end)
        self._room = RoomConfig(max_speed=float(p.max_speed), time_limit_s=float(p.time_limit_s))
        self._renderer = Renderer(self._room, CameraConfig(int(p.image_width), int(p.image_height), float(p.hfov_deg)))
        self._camera_frame, self._world_frame = p.camera_frame_id, p.world_frame_id

        self._image_pub = self.create_publisher(Image, CAMERA.name, 2)
        self._pose_pub = self.create_publisher(PoseStamped, POSE.name, 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self._result_pub = self.create_publisher(String, RESULT.name, latched)
        self.create_subscription(Twist, CMD_VEL.name, self._on_cmd_vel, 10)
        self.create_service(Trigger, RESET.name, self._on_reset)

        self._episode = int(p.first_episode) - 1
        self._start_episode()
        if self._lockstep:
            self._clock_pub = self.create_publisher(Clock, CLOCK.name, 10)
            self.create_subscription(TimeReference, WINDOW_ANSWERED.name, self._on_answered, 10)
            self._instruction_pub = self.create_publisher(String, INSTRUCTION.name, 10)
            self.create_subscription(String, INSTRUCTION_AT.name, self._on_instruction_at, 10)
            self.create_subscription(String, INSTRUCTION_ACTIVE.name, self._on_instruction_active, latched)
            self._step = 0
            self._awaiting_since = 0.0
            self._frame_ns = -1  # stamp of the last camera frame
            self._windows_flow = False
            self._step_wall_s = 1.0 / (p.physics_rate_hz * p.max_real_time_factor)
            self._next_step_at = 0.0
            self.create_timer(self._step_wall_s, self._next_step)  # paces; an answer steps on at once
            self.create_timer(LOCKSTEP_RECHECK_S, self._check_waiting)
        else:
            self.create_timer(1.0 / p.physics_rate_hz, self._on_physics_tick)
            self.create_timer(1.0 / p.camera_rate_hz, self._on_camera_tick)

    def _setting(self, name: str, check, value):
        if check is not None:
            check(name, value)
        return lambda: setattr(self.p, name, value)

    # -- episode ------------------------------------------------------------------------------
    def _start_episode(self) -> None:
        self._episode += 1
        seed = int(self.p.seed)
        now_ns = self._now_ns()
        release_ns = now_ns + round(self.p.start_hold_s * 1e9)
        if self._lockstep:  # released on a camera frame: the same phase of frames and commands every episode
            frame_ns = self._camera_steps * self._step_ns
            release_ns = -(-release_ns // frame_ns) * frame_ns
        self._live = LiveEpisode(World(sample_layout(seed, self._episode, self._room), self._room), now_ns, release_ns)
        self._seed = seed
        self._instruction_at = None
        self._publish_result()
        self.get_logger().info(f"episode {self._episode} (seed {seed}): {self._live.world.layout.to_dict()}")

    def _publish_result(self) -> None:
        summary = {**self._live.world.summary(), "episode": self._episode, "seed": self._seed}
        self._result_pub.publish(String(data=json.dumps(summary)))

    def _on_reset(self, request, response):
        self._start_episode()
        response.success = True
        response.message = json.dumps(
            {
                "episode": self._episode,
                "seed": self._seed,
                "layout": self._live.world.layout.to_dict(),
                "release_time": self._live.release_ns * 1e-9,  # header time at which the robot may move
            }
        )
        return response

    # -- motion -------------------------------------------------------------------------------
    def _on_cmd_vel(self, msg: Twist) -> None:
        command = (msg.linear.x, msg.linear.y)
        if not all(math.isfinite(v) for v in command):
            self.get_logger().error(f"non-finite cmd_vel {command} ignored; stopping", throttle_duration_sec=1.0)
            command = (0.0, 0.0)
        self._advance()  # the previous command was in force until now
        self._live.command(command, self._now_ns())
        self._commands_flow = True
        if self._awaiting == "cmd_vel":
            if self._step % self._camera_steps == 0:
                self._on_camera_tick()
                if self._windows_flow:
                    self._awaiting = "answer"
                    return
            self._answered()

    def _now_ns(self) -> int:
        return self._sim_ns if self._lockstep else self.get_clock().now().nanoseconds

    def _advance(self) -> Time:
        """The episode advanced to now (sim.live_episode); returns now."""
        now_ns = self._now_ns()
        if self._live.advance(now_ns, self.p.cmd_timeout_s * 1e9):
            self._publish_result()
            self.get_logger().info(f"episode {self._episode} ended: {self._live.world.summary()['outcome']}")
        return Time(nanoseconds=now_ns, clock_type=self.get_clock().clock_type)

    # -- lockstep -------------------------------------------------------------------------------
    def _next_step(self) -> None:
        """Next physics step, once the pipeline has answered the last one and the real-time cap allows."""
        now = time.monotonic()
        if self._awaiting is not None or now < self._next_step_at:
            return
        if self._instruction_at is not None and self._sim_ns + self._step_ns >= self._instruction_at[0]:
            (_, text), self._instruction_at = self._instruction_at, None
            self._instruction_pub.publish(String(data=text))
            self._awaiting, self._awaiting_since = "instruction/active", now
            return
        self._next_step_at = max(self._next_step_at + self._step_wall_s, now)
        self._step += 1
        self._sim_ns += self._step_ns
        self._publish_clock()
        self._on_physics_tick()
        if self._commands_flow:
            self._awaiting, self._awaiting_since = "cmd_vel", now
        elif self._step % self._camera_steps == 0:
            self._on_camera_tick()  # nobody commands yet: the frames go out at the real-time cap

    def _answered(self) -> None:
        self._awaiting = None
        self._next_step()

    def _check_waiting(self) -> None:
        """Republish /clock for a node that joined late (it is best effort), and say what the clock waits for."""
        if self._awaiting is None:
            return
        self._publish_clock()
        waited = time.monotonic() - self._awaiting_since
        if waited > LOCKSTEP_PATIENCE_S:
            self.get_logger().warning(
                f"lockstep: simulated time stands at {self._sim_ns * 1e-9:.2f} s, waiting {waited:.0f} s for "
                f"the pipeline's {self._awaiting} (is inference_node running with use_sim_time, and "
                "camera_rate_hz the model's frame rate?)",
                throttle_duration_sec=LOCKSTEP_PATIENCE_S,
            )

    def _publish_clock(self) -> None:
        self._clock_pub.publish(Clock(clock=Time(nanoseconds=self._sim_ns).to_msg()))

    def _on_answered(self, msg: TimeReference) -> None:
        self._windows_flow = True
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        if self._awaiting == "answer" and stamp_ns >= self._frame_ns:
            self._answered()

    def _on_instruction_at(self, msg: String) -> None:
        try:
            request = json.loads(msg.data)
            self._instruction_at = (round(float(request["time_s"]) * 1e9), str(request["instruction"]))
        except (ValueError, KeyError, TypeError) as error:
            self.get_logger().error(f"sim/instruction_at {msg.data!r} ignored: {error}")

    def _on_instruction_active(self, msg: String) -> None:
        if self._awaiting == "instruction/active":
            self._answered()

    def _on_physics_tick(self) -> None:
        now = self._advance()
        if self._next_on_end and self._live.ended_ns is not None:
            if now.nanoseconds - self._live.ended_ns >= NEXT_EPISODE_PAUSE_S * 1e9:
                self._start_episode()
                now = self._advance()
        pose = PoseStamped()
        pose.header.stamp = now.to_msg()
        pose.header.frame_id = self._world_frame
        state = self._live.world.state
        pose.pose.position.x, pose.pose.position.y = float(state.x), float(state.y)
        pose.pose.orientation.w = 1.0  # always facing +x
        self._pose_pub.publish(pose)

    def _on_camera_tick(self) -> None:
        now = self._advance()
        self._frame_ns = now.nanoseconds
        state, layout = self._live.world.state, self._live.world.layout
        x, y = layout.start if self.p.freeze_camera else (state.x, state.y)
        image = SCENES[self.p.scene](self._renderer.render(layout, x, y))
        self._image_pub.publish(rgb_to_image_msg(image, now.to_msg(), self._camera_frame))


def main(args=None) -> int:
    return run_node("sim_node", SimNode, args=args)


if __name__ == "__main__":
    raise SystemExit(main())
