//! A two-link arm in a horizontal plane (no gravity, like a SCARA robot):
//! two links hinged in series at a fixed base, a torque motor at each
//! joint, reaching a sequence of targets.
//!
//! Observations: `q1` (rad, the first link's angle), `q2` (rad, the second
//! link's angle relative to the first), `q1_dot`, `q2_dot` (rad/s),
//! `target_x`, `target_y` (m). Actuators: `torque1`, `torque2` (N·m).

use std::time::Duration;

use rapier2d::prelude::*;

use super::{SensorNoise, substeps};
use crate::world::{Actuator, World, WorldOptions};

/// Link lengths (m) and masses (kg).
pub const LINK1_LENGTH: f32 = 1.0;
pub const LINK2_LENGTH: f32 = 0.8;
const LINK1_MASS: f32 = 1.0;
const LINK2_MASS: f32 = 0.6;
/// The largest torque each motor gives.
pub const MAX_TORQUE: f32 = 10.0;
/// Damping of the brake applied as the safe action (N·m per rad/s).
const BRAKE_DAMPING: f32 = 2.0;
/// Past this joint speed the arm is out of control.
const OVERSPEED: f32 = 20.0;
/// How long each target is held before the next.
const TARGET_PERIOD: f64 = 2.0;
/// Targets, all within reach, visited in turn.
const TARGETS: &[[f32; 2]] = &[[1.2, 0.6], [0.4, 1.3], [-0.8, 0.9], [0.9, -0.7]];

const OBSERVATIONS: &[&str] = &["q1", "q2", "q1_dot", "q2_dot", "target_x", "target_y"];
const ACTUATORS: &[Actuator] = &[
    Actuator {
        name: "torque1",
        min: -MAX_TORQUE,
        max: MAX_TORQUE,
    },
    Actuator {
        name: "torque2",
        min: -MAX_TORQUE,
        max: MAX_TORQUE,
    },
];

/// The two-link arm world.
pub struct TwoLinkArm {
    physics: PhysicsWorld,
    link1: RigidBodyHandle,
    link2: RigidBodyHandle,
    noise: SensorNoise,
    time: f64,
    /// Sum of the hand's distance to its target over the ticks, and ticks.
    error_sum: f64,
    ticks: u64,
    /// Mean distance over each target's last half period.
    settled_error_sum: f64,
    settled_ticks: u64,
}

impl std::fmt::Debug for TwoLinkArm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwoLinkArm")
            .field("joints", &self.joints())
            .finish_non_exhaustive()
    }
}

/// A uniform rod's mass properties about its centre.
fn rod(mass: f32, length: f32) -> MassProperties {
    MassProperties::new(Vector::ZERO, mass, mass * length * length / 12.0)
}

impl TwoLinkArm {
    pub fn new(options: &WorldOptions) -> Self {
        let mut physics = PhysicsWorld {
            gravity: Vector::ZERO,
            ..PhysicsWorld::default()
        };
        let base = physics.bodies.insert(RigidBodyBuilder::fixed());
        // Both links start along +x.
        let link1 = physics.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(Vector::new(LINK1_LENGTH / 2.0, 0.0))
                .additional_mass_properties(rod(LINK1_MASS, LINK1_LENGTH)),
        );
        let link2 = physics.bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(Vector::new(LINK1_LENGTH + LINK2_LENGTH / 2.0, 0.0))
                .additional_mass_properties(rod(LINK2_MASS, LINK2_LENGTH)),
        );
        physics.impulse_joints.insert(
            base,
            link1,
            RevoluteJointBuilder::new().local_anchor2(Vector::new(-LINK1_LENGTH / 2.0, 0.0)),
            true,
        );
        physics.impulse_joints.insert(
            link1,
            link2,
            RevoluteJointBuilder::new()
                .local_anchor1(Vector::new(LINK1_LENGTH / 2.0, 0.0))
                .local_anchor2(Vector::new(-LINK2_LENGTH / 2.0, 0.0)),
            true,
        );
        TwoLinkArm {
            physics,
            link1,
            link2,
            noise: SensorNoise::new(options.seed, options.sensor_noise),
            time: 0.0,
            error_sum: 0.0,
            ticks: 0,
            settled_error_sum: 0.0,
            settled_ticks: 0,
        }
    }

    /// `[q1, q2, q1_dot, q2_dot]`, exact.
    pub fn joints(&self) -> [f32; 4] {
        let link1 = &self.physics.bodies[self.link1];
        let link2 = &self.physics.bodies[self.link2];
        let a1 = link1.rotation().angle();
        let a2 = link2.rotation().angle();
        let relative = wrap(a2 - a1);
        [
            a1,
            relative,
            link1.angvel(),
            link2.angvel() - link1.angvel(),
        ]
    }

    fn target(&self) -> [f32; 2] {
        TARGETS[(self.time / TARGET_PERIOD) as usize % TARGETS.len()]
    }

    /// Where the hand (the second link's tip) is.
    pub fn hand(&self) -> [f32; 2] {
        let [q1, q2, ..] = self.joints();
        [
            LINK1_LENGTH * q1.cos() + LINK2_LENGTH * (q1 + q2).cos(),
            LINK1_LENGTH * q1.sin() + LINK2_LENGTH * (q1 + q2).sin(),
        ]
    }
}

/// An angle in (-π, π].
fn wrap(angle: f32) -> f32 {
    let wrapped = angle.rem_euclid(std::f32::consts::TAU);
    if wrapped > std::f32::consts::PI {
        wrapped - std::f32::consts::TAU
    } else {
        wrapped
    }
}

impl World for TwoLinkArm {
    fn name(&self) -> &'static str {
        "arm"
    }

    fn observations(&self) -> &'static [&'static str] {
        OBSERVATIONS
    }

    fn actuators(&self) -> &'static [Actuator] {
        ACTUATORS
    }

    fn observe(&mut self, values: &mut [f32]) {
        let [q1, q2, q1_dot, q2_dot] = self.joints();
        let [tx, ty] = self.target();
        let exact = [q1, q2, q1_dot, q2_dot];
        for (value, exact) in values.iter_mut().zip(exact) {
            *value = self.noise.read(exact);
        }
        // The target is known, not sensed.
        if let [.., x, y] = values {
            *x = tx;
            *y = ty;
        }
    }

    fn safe_action(&self, action: &mut [f32]) {
        let [_, _, q1_dot, q2_dot] = self.joints();
        for (torque, speed) in action.iter_mut().zip([q1_dot, q2_dot]) {
            *torque = (-BRAKE_DAMPING * speed).clamp(-MAX_TORQUE, MAX_TORQUE);
        }
    }

    fn advance(&mut self, action: &[f32], dt: Duration) {
        let torque1 = action.first().copied().unwrap_or(0.0);
        let torque2 = action.get(1).copied().unwrap_or(0.0);
        let (steps, step) = substeps(dt);
        self.physics.integration_parameters.dt = step;
        // Motor 1 turns link 1 against the base; motor 2 turns link 2
        // against link 1 (and link 1 feels the reaction).
        let link1 = &mut self.physics.bodies[self.link1];
        link1.reset_torques(true);
        link1.add_torque(torque1 - torque2, true);
        let link2 = &mut self.physics.bodies[self.link2];
        link2.reset_torques(true);
        link2.add_torque(torque2, true);
        for _ in 0..steps {
            self.physics.step();
        }
        self.time += dt.as_secs_f64();
        let [hx, hy] = self.hand();
        let [tx, ty] = self.target();
        let error = f64::from(((hx - tx).powi(2) + (hy - ty).powi(2)).sqrt());
        self.error_sum += error;
        self.ticks += 1;
        if self.time % TARGET_PERIOD >= TARGET_PERIOD / 2.0 {
            self.settled_error_sum += error;
            self.settled_ticks += 1;
        }
    }

    fn failure(&self) -> Option<String> {
        let [_, _, q1_dot, q2_dot] = self.joints();
        let fastest = q1_dot.abs().max(q2_dot.abs());
        // A NaN speed (the simulation blew up) fails too.
        if fastest.is_nan() || fastest >= OVERSPEED {
            return Some(format!("a joint overspeeds ({fastest:.1} rad/s)"));
        }
        None
    }

    fn report(&self) -> Vec<(&'static str, f64)> {
        let mean = |sum: f64, n: u64| if n == 0 { 0.0 } else { sum / n as f64 };
        vec![
            ("mean_error_m", mean(self.error_sum, self.ticks)),
            (
                "settled_error_m",
                mean(self.settled_error_sum, self.settled_ticks),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_motor_torque_turns_its_link_and_the_chain_stays_joined() {
        let mut arm = TwoLinkArm::new(&WorldOptions::default());
        for _ in 0..50 {
            arm.advance(&[1.0, 0.0], Duration::from_millis(10));
        }
        let [q1, _, q1_dot, _] = arm.joints();
        assert!(q1 > 0.05 && q1_dot > 0.0, "{:?}", arm.joints());
        // The second link's inner end stays at the first link's tip.
        let link2 = &arm.physics.bodies[arm.link2];
        let a2 = link2.rotation().angle();
        let inner = link2.translation() - Vector::new(a2.cos(), a2.sin()) * (LINK2_LENGTH / 2.0);
        let tip = Vector::new(q1.cos(), q1.sin()) * LINK1_LENGTH;
        assert!((inner - tip).length() < 1e-2, "{inner:?} vs {tip:?}");
    }

    #[test]
    fn the_brake_slows_a_spinning_arm() {
        let mut arm = TwoLinkArm::new(&WorldOptions::default());
        for _ in 0..50 {
            arm.advance(&[5.0, 2.0], Duration::from_millis(10));
        }
        let before = arm.joints()[2].abs();
        let mut brake = [0.0; 2];
        for _ in 0..200 {
            arm.safe_action(&mut brake);
            arm.advance(&brake, Duration::from_millis(10));
        }
        assert!(arm.joints()[2].abs() < before / 10.0, "{:?}", arm.joints());
    }
}
