//! A small Whitted-style ray tracer: spheres and planes, diffuse + specular shading, hard shadows
//! and mirror reflections. Every pixel is a pure function of its coordinates, so any machine renders
//! it to the same bits as a sequential render. The tracer counts intersection tests: the simulator
//! charges CPU time per test.

/// 3-vector of f64.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct V3(pub f64, pub f64, pub f64);

impl V3 {
    fn add(self, o: V3) -> V3 {
        V3(self.0 + o.0, self.1 + o.1, self.2 + o.2)
    }
    fn sub(self, o: V3) -> V3 {
        V3(self.0 - o.0, self.1 - o.1, self.2 - o.2)
    }
    fn mul(self, k: f64) -> V3 {
        V3(self.0 * k, self.1 * k, self.2 * k)
    }
    fn hadamard(self, o: V3) -> V3 {
        V3(self.0 * o.0, self.1 * o.1, self.2 * o.2)
    }
    fn dot(self, o: V3) -> f64 {
        self.0 * o.0 + self.1 * o.1 + self.2 * o.2
    }
    fn norm(self) -> V3 {
        self.mul(1.0 / self.dot(self).sqrt())
    }
}

#[derive(Copy, Clone, Debug)]
pub struct Material {
    pub color: V3,
    /// Second colour of a checkerboard (planes), or equal to `color`.
    pub checker: V3,
    pub diffuse: f64,
    pub specular: f64,
    pub shininess: i32,
    pub reflect: f64,
}

#[derive(Copy, Clone, Debug)]
pub enum Shape {
    Sphere { center: V3, radius: f64 },
    Plane { point: V3, normal: V3 },
}

#[derive(Copy, Clone, Debug)]
pub struct Object {
    pub shape: Shape,
    pub material: Material,
}

/// The scene and the camera.
#[derive(Clone, Debug)]
pub struct Scene {
    pub objects: Vec<Object>,
    pub light: V3,
    pub ambient: f64,
    pub eye: V3,
    pub max_depth: u32,
    pub width: u32,
    pub height: u32,
    /// Samples per pixel side (2 = 2×2 supersampling).
    pub samples: u32,
}

const EPS: f64 = 1e-6;

impl Scene {
    /// The standard scene: a checkered floor, a back wall and eight spheres, some mirrors.
    pub fn standard(width: u32, height: u32) -> Scene {
        let m = |c: V3, d: f64, s: f64, r: f64| Material {
            color: c,
            checker: c,
            diffuse: d,
            specular: s,
            shininess: 40,
            reflect: r,
        };
        let mut objects = vec![
            Object {
                shape: Shape::Plane {
                    point: V3(0.0, -1.0, 0.0),
                    normal: V3(0.0, 1.0, 0.0),
                },
                material: Material {
                    checker: V3(0.1, 0.1, 0.1),
                    ..m(V3(0.9, 0.9, 0.9), 0.8, 0.1, 0.3)
                },
            },
            Object {
                shape: Shape::Plane {
                    point: V3(0.0, 0.0, 12.0),
                    normal: V3(0.0, 0.0, -1.0),
                },
                material: m(V3(0.4, 0.5, 0.7), 0.9, 0.0, 0.0),
            },
        ];
        let spheres = [
            (V3(0.0, 0.0, 5.0), 1.0, V3(0.9, 0.2, 0.2), 0.2),
            (V3(-2.2, -0.3, 6.0), 0.7, V3(0.2, 0.9, 0.3), 0.1),
            (V3(2.3, 0.2, 6.5), 1.2, V3(0.9, 0.9, 0.9), 0.8),
            (V3(-1.0, -0.6, 3.5), 0.4, V3(0.2, 0.3, 0.9), 0.3),
            (V3(1.2, -0.7, 3.8), 0.3, V3(0.9, 0.8, 0.1), 0.0),
            (V3(-3.5, 1.0, 8.0), 1.5, V3(0.8, 0.4, 0.9), 0.5),
            (V3(0.5, 1.8, 8.5), 0.9, V3(0.3, 0.9, 0.9), 0.4),
            (V3(3.8, -0.4, 4.5), 0.6, V3(0.9, 0.5, 0.2), 0.6),
        ];
        for (c, r, col, refl) in spheres {
            objects.push(Object {
                shape: Shape::Sphere {
                    center: c,
                    radius: r,
                },
                material: m(col, 0.7, 0.5, refl),
            });
        }
        Scene {
            objects,
            light: V3(-4.0, 6.0, -2.0),
            ambient: 0.1,
            eye: V3(0.0, 0.5, -1.0),
            max_depth: 4,
            width,
            height,
            samples: 2,
        }
    }

    fn hit(&self, orig: V3, dir: V3, tests: &mut u64) -> Option<(f64, usize)> {
        let mut best: Option<(f64, usize)> = None;
        for (i, o) in self.objects.iter().enumerate() {
            *tests += 1;
            let t = match o.shape {
                Shape::Sphere { center, radius } => {
                    let oc = orig.sub(center);
                    let b = oc.dot(dir);
                    let c = oc.dot(oc) - radius * radius;
                    let disc = b * b - c;
                    if disc < 0.0 {
                        continue;
                    }
                    let s = disc.sqrt();
                    if -b - s > EPS {
                        -b - s
                    } else if -b + s > EPS {
                        -b + s
                    } else {
                        continue;
                    }
                }
                Shape::Plane { point, normal } => {
                    let den = normal.dot(dir);
                    if den.abs() < EPS {
                        continue;
                    }
                    let t = point.sub(orig).dot(normal) / den;
                    if t <= EPS {
                        continue;
                    }
                    t
                }
            };
            if best.is_none_or(|(bt, _)| t < bt) {
                best = Some((t, i));
            }
        }
        best
    }

    fn trace(&self, orig: V3, dir: V3, depth: u32, tests: &mut u64) -> V3 {
        let Some((t, i)) = self.hit(orig, dir, tests) else {
            return V3(0.05, 0.05, 0.1);
        };
        let o = &self.objects[i];
        let p = orig.add(dir.mul(t));
        let n = match o.shape {
            Shape::Sphere { center, .. } => p.sub(center).norm(),
            Shape::Plane { normal, .. } => normal,
        };
        let mat = o.material;
        let base = if ((p.0.floor() + p.2.floor()) as i64).rem_euclid(2) == 0 {
            mat.color
        } else {
            mat.checker
        };
        let to_light = self.light.sub(p);
        let dist = to_light.dot(to_light).sqrt();
        let l = to_light.mul(1.0 / dist);
        let lit = match self.hit(p.add(n.mul(1e-4)), l, tests) {
            Some((st, _)) => st > dist,
            None => true,
        };
        let mut c = base.mul(self.ambient);
        if lit {
            let diff = n.dot(l).max(0.0) * mat.diffuse;
            let refl_l = n.mul(2.0 * n.dot(l)).sub(l);
            let spec = refl_l.dot(dir.mul(-1.0)).max(0.0).powi(mat.shininess) * mat.specular;
            c = c.add(base.mul(diff)).add(V3(spec, spec, spec));
        }
        if mat.reflect > 0.0 && depth < self.max_depth {
            let r = dir.sub(n.mul(2.0 * n.dot(dir))).norm();
            let rc = self.trace(p.add(n.mul(1e-4)), r, depth + 1, tests);
            c = c
                .mul(1.0 - mat.reflect)
                .add(rc.hadamard(V3(1.0, 1.0, 1.0)).mul(mat.reflect));
        }
        c
    }

    /// The RGB bytes of pixel (x, y) and the number of intersection tests it took.
    pub fn pixel(&self, x: u32, y: u32) -> ([u8; 3], u64) {
        let mut tests = 0;
        let (w, h, s) = (
            f64::from(self.width),
            f64::from(self.height),
            self.samples.max(1),
        );
        let aspect = w / h;
        let mut acc = V3(0.0, 0.0, 0.0);
        for sy in 0..s {
            for sx in 0..s {
                let fx = (f64::from(x) + (f64::from(sx) + 0.5) / f64::from(s)) / w;
                let fy = (f64::from(y) + (f64::from(sy) + 0.5) / f64::from(s)) / h;
                let dir = V3((2.0 * fx - 1.0) * aspect * 0.6, (1.0 - 2.0 * fy) * 0.6, 1.0).norm();
                acc = acc.add(self.trace(self.eye, dir, 0, &mut tests));
            }
        }
        let acc = acc.mul(1.0 / f64::from(s * s));
        let q = |v: f64| (v.clamp(0.0, 1.0).sqrt() * 255.0 + 0.5) as u8;
        ([q(acc.0), q(acc.1), q(acc.2)], tests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_shadows_reflections_and_counts_work() {
        let s = Scene::standard(64, 48);
        let (sky_or_wall, t1) = s.pixel(0, 0);
        let (centre, t2) = s.pixel(32, 26);
        assert_ne!(sky_or_wall, centre, "the red sphere is in the middle");
        assert!(centre[0] > centre[1], "red sphere: {centre:?}");
        assert!(t1 > 0 && t2 > t1 / 2);
        assert_eq!(
            s.pixel(10, 40),
            s.pixel(10, 40),
            "pure function of coordinates"
        );
    }
}
