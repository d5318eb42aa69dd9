"""Plant models behind the device simulators: a centrifugal pump and a line motor.

Both models are pure: no clock, no I/O, no global random state. The caller owns time and passes the
elapsed seconds to ``step(dt)``; randomness comes from a ``random.Random`` seeded at construction. The
same seed and the same sequence of ``dt`` therefore give the same readings, which is what lets the tests
(and a later anomaly detector's tests) replay a run.

How they move, deliberately simple but shaped like real equipment:

- Speed follows the setpoint (or zero when stopped) through a first-order lag, as a VFD ramp roughly does.
- The pump obeys the affinity laws: flow grows with speed, pressure with speed squared.
- Load (shaft power) grows with the cube of speed; the winding temperature lags towards
  ``ambient + rise * load`` with a long thermal time constant.
- Readings carry small Gaussian measurement noise on top of the smooth internal state; noise never
  feeds back into the state, so it does not accumulate.
- A fault mode (think bearing damage or cavitation) starts at random while running, lasts a while and
  multiplies vibration; it can also be forced, so a demo can show the anomaly detector on cue.

Deliberately not modelled: hydraulics of a real system curve, inertia from the load, electrical
quantities (current, power factor), wear over time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


def lag(value: float, target: float, dt: float, tau: float) -> float:
    """One step of a first-order lag: move ``value`` towards ``target`` with time constant ``tau``.

    Exact for a constant target over ``dt`` (unlike ``value + dt/tau * error``), so it is stable for any
    step size."""
    if dt <= 0:
        return value
    if tau <= 0:
        return target
    return target + (value - target) * math.exp(-dt / tau)


_STANDSTILL_RPM = 1.0  # below this a coasting shaft is stopped, and counts as not turning


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass(frozen=True)
class PumpParams:
    """Nameplate and dynamics of the simulated pump (a small 2-pole, 50 Hz end-suction pump)."""

    max_speed_rpm: float = 3000.0  # 2-pole motor at 50 Hz: ~2900 rpm nominal, the VFD allows 3000
    rated_speed_rpm: float = 2900.0
    rated_flow_lpm: float = 250.0  # flow at rated speed
    rated_pressure_bar: float = 6.0  # discharge pressure at rated speed
    ambient_c: float = 25.0
    temp_rise_c: float = 45.0  # winding temperature rise at full load (class B motors allow ~80 K)
    speed_tau_s: float = 1.5  # VFD ramp, as a time constant
    thermal_tau_s: float = 30.0  # much faster than a real motor (minutes) so a demo shows it moving
    vibration_base_mm_s: float = 1.2  # healthy running at rated speed: ISO 10816 zone A (< 1.8 mm/s)
    fault_vibration_factor: float = 6.0  # ~7 mm/s: ISO 10816 zone C/D boundary for small machines
    fault_rate_per_s: float = 1.0 / 600.0  # while running, a fault starts on average every 10 minutes
    fault_duration_s: float = 30.0  # mean duration of a spontaneous fault


@dataclass(frozen=True)
class PumpReading:
    """One sample of the pump, as its instruments would report it."""

    running: bool  # the run command (coil)
    speed_setpoint_rpm: float
    speed_rpm: float
    flow_lpm: float
    pressure_bar: float
    motor_temp_c: float
    vibration_mm_s: float
    fault: bool


# Bounds every reading stays within, whatever the seed: checked by the tests, relied on by register scaling.
PUMP_BOUNDS: dict[str, tuple[float, float]] = {
    "speed_rpm": (0.0, 3000.0),
    "flow_lpm": (0.0, 300.0),
    "pressure_bar": (0.0, 10.0),
    "motor_temp_c": (-20.0, 150.0),
    "vibration_mm_s": (0.0, 50.0),
}


class PumpModel:
    """A centrifugal pump driven by a motor on a VFD. Commands: run/stop, speed setpoint, forced fault."""

    def __init__(self, seed: int = 0, params: PumpParams | None = None) -> None:
        self.params = params or PumpParams()
        self._rng = random.Random(seed)
        self.running = False
        self.speed_setpoint_rpm = 1500.0
        self.forced_fault = False
        self._speed = 0.0
        self._temp = self.params.ambient_c
        self._fault_left_s = 0.0  # remaining seconds of a spontaneous fault
        self.time_s = 0.0  # model time: the sum of every dt stepped
        self._last = self._reading()

    # Commands -----------------------------------------------------------------------------------
    def set_speed_setpoint(self, rpm: float) -> float:
        """Set the speed setpoint, clamped to ``[0, max_speed_rpm]``; returns the value accepted."""
        self.speed_setpoint_rpm = clamp(float(rpm), 0.0, self.params.max_speed_rpm)
        return self.speed_setpoint_rpm

    def set_running(self, running: bool) -> None:
        self.running = bool(running)

    def set_fault(self, on: bool) -> None:
        """Force the fault mode on (until cleared) or clear it, including a spontaneous one."""
        self.forced_fault = bool(on)
        if not on:
            self._fault_left_s = 0.0

    # Dynamics -----------------------------------------------------------------------------------
    @property
    def fault(self) -> bool:
        return self.forced_fault or self._fault_left_s > 0

    @property
    def last(self) -> PumpReading:
        """The reading of the latest step (or of the initial state)."""
        return self._last

    def step(self, dt: float) -> PumpReading:
        """Advance the model by ``dt`` seconds and return a fresh reading."""
        p = self.params
        dt = max(0.0, dt)
        self.time_s += dt
        target = self.speed_setpoint_rpm if self.running else 0.0
        self._speed = lag(self._speed, target, dt, p.speed_tau_s)
        if target == 0.0 and self._speed < _STANDSTILL_RPM:
            self._speed = 0.0  # friction stops the shaft: an exponential alone never reaches zero
        load = (self._speed / p.rated_speed_rpm) ** 3
        self._temp = lag(self._temp, p.ambient_c + p.temp_rise_c * load, dt, p.thermal_tau_s)
        if self._fault_left_s > 0:
            self._fault_left_s = max(0.0, self._fault_left_s - dt)
        elif self.running and self._rng.random() < p.fault_rate_per_s * dt:
            self._fault_left_s = self._rng.expovariate(1.0 / p.fault_duration_s)
        self._last = self._reading()
        return self._last

    def _noise(self, sigma: float) -> float:
        return self._rng.gauss(0.0, sigma)

    def _reading(self) -> PumpReading:
        p = self.params
        ratio = self._speed / p.rated_speed_rpm
        turning = self._speed > _STANDSTILL_RPM  # a still shaft: no flow, no measurement noise
        vibration = p.vibration_base_mm_s * ratio * (p.fault_vibration_factor if self.fault else 1.0)
        b = PUMP_BOUNDS
        return PumpReading(
            running=self.running,
            speed_setpoint_rpm=self.speed_setpoint_rpm,
            speed_rpm=clamp(self._speed + (self._noise(2.0) if turning else 0.0), *b["speed_rpm"]),
            flow_lpm=clamp(p.rated_flow_lpm * ratio + (self._noise(0.8) if turning else 0.0), *b["flow_lpm"]),
            pressure_bar=clamp(
                p.rated_pressure_bar * ratio**2 + (self._noise(0.03) if turning else 0.0), *b["pressure_bar"]
            ),
            motor_temp_c=clamp(self._temp + self._noise(0.1), *b["motor_temp_c"]),
            vibration_mm_s=clamp(
                vibration + (abs(self._noise(0.05)) if turning else 0.0), *b["vibration_mm_s"]
            ),
            fault=self.fault,
        )


@dataclass(frozen=True)
class MotorParams:
    """The motor of a production line (a press or conveyor) with a hydraulic pressure and a part counter."""

    max_speed_rpm: float = 1800.0  # 4-pole motor at 60 Hz
    ambient_c: float = 25.0
    temp_rise_c: float = 50.0  # winding temperature rise at full speed
    speed_tau_s: float = 1.0
    thermal_tau_s: float = 20.0  # compressed from minutes so a demo shows it moving
    pressure_max_bar: float = 180.0  # hydraulic pressure at full speed
    revolutions_per_part: float = 30.0  # 1500 rpm -> 50 parts a minute
    fault_rate_per_s: float = 1.0 / 600.0
    fault_duration_s: float = 30.0
    fault_temp_extra_c: float = 15.0  # a fault (overload, failing bearing) heats the motor further


@dataclass(frozen=True)
class MotorReading:
    running: bool
    speed_setpoint_rpm: float
    speed_rpm: float
    temperature_c: float
    pressure_bar: float
    count: int  # parts produced since start
    fault: bool


MOTOR_BOUNDS: dict[str, tuple[float, float]] = {
    "speed_rpm": (0.0, 1800.0),
    "temperature_c": (-20.0, 150.0),
    "pressure_bar": (0.0, 200.0),
}


class MotorModel:
    """A line motor: run/stop, speed setpoint, temperature rising with load, parts counted as it turns."""

    def __init__(self, seed: int = 0, params: MotorParams | None = None) -> None:
        self.params = params or MotorParams()
        self._rng = random.Random(seed)
        self.running = False
        self.speed_setpoint_rpm = 1200.0
        self.forced_fault = False
        self._speed = 0.0
        self._temp = self.params.ambient_c
        self._revolutions = 0.0
        self._fault_left_s = 0.0
        self.time_s = 0.0
        self._last = self._reading()

    def set_speed_setpoint(self, rpm: float) -> float:
        """Set the speed setpoint, clamped to ``[0, max_speed_rpm]``; returns the value accepted."""
        self.speed_setpoint_rpm = clamp(float(rpm), 0.0, self.params.max_speed_rpm)
        return self.speed_setpoint_rpm

    def set_running(self, running: bool) -> None:
        self.running = bool(running)

    def set_fault(self, on: bool) -> None:
        self.forced_fault = bool(on)
        if not on:
            self._fault_left_s = 0.0

    @property
    def fault(self) -> bool:
        return self.forced_fault or self._fault_left_s > 0

    @property
    def last(self) -> MotorReading:
        return self._last

    def step(self, dt: float) -> MotorReading:
        p = self.params
        dt = max(0.0, dt)
        self.time_s += dt
        before = self._speed
        target = self.speed_setpoint_rpm if self.running else 0.0
        self._speed = lag(self._speed, target, dt, p.speed_tau_s)
        if target == 0.0 and self._speed < _STANDSTILL_RPM:
            self._speed = 0.0  # friction stops the shaft: an exponential alone never reaches zero
        # Revolutions over the step: the mean speed (trapezoid) times the time, rpm -> rev/s.
        self._revolutions += (before + self._speed) / 2.0 / 60.0 * dt
        load = (self._speed / p.max_speed_rpm) ** 2
        extra = p.fault_temp_extra_c if self.fault and self._speed > _STANDSTILL_RPM else 0.0
        self._temp = lag(self._temp, p.ambient_c + p.temp_rise_c * load + extra, dt, p.thermal_tau_s)
        if self._fault_left_s > 0:
            self._fault_left_s = max(0.0, self._fault_left_s - dt)
        elif self.running and self._rng.random() < p.fault_rate_per_s * dt:
            self._fault_left_s = self._rng.expovariate(1.0 / p.fault_duration_s)
        self._last = self._reading()
        return self._last

    def _reading(self) -> MotorReading:
        p = self.params
        turning = self._speed > _STANDSTILL_RPM
        ratio = self._speed / p.max_speed_rpm
        b = MOTOR_BOUNDS
        return MotorReading(
            running=self.running,
            speed_setpoint_rpm=self.speed_setpoint_rpm,
            speed_rpm=clamp(self._speed + (self._rng.gauss(0.0, 1.5) if turning else 0.0), *b["speed_rpm"]),
            temperature_c=clamp(self._temp + self._rng.gauss(0.0, 0.1), *b["temperature_c"]),
            pressure_bar=clamp(
                p.pressure_max_bar * ratio + (self._rng.gauss(0.0, 0.5) if turning else 0.0),
                *b["pressure_bar"],
            ),
            count=int(self._revolutions // p.revolutions_per_part),
            fault=self.fault,
        )
