//! The districts of the two city plans and plausible monitoring sites in each.

/// A district (区/县级市) with the places its sensors are named after.
pub(crate) struct District {
    pub(crate) name: &'static str,
    /// Short code used in sensor ids, e.g. `qc` in `wq-qc-01`.
    pub(crate) code: &'static str,
    /// River monitoring sections: hydrology and water quality stations.
    pub(crate) rivers: &'static [&'static str],
    /// Streets and towns: air, noise, meters, gas detectors.
    pub(crate) streets: &'static [&'static str],
    pub(crate) bridges: &'static [&'static str],
    pub(crate) slopes: &'static [&'static str],
    pub(crate) forests: &'static [&'static str],
}

/// Qingyuan (清远) districts first, then Jieyang (揭阳). Sensor `i` of a kind lives in
/// `DISTRICTS[i % 7]`, so every district gets sensors of every kind once `per_kind ≥ 7`.
pub(crate) const DISTRICTS: [District; 7] = [
    District {
        name: "清城区",
        code: "qc",
        rivers: &["北江清远段", "北江飞来峡", "大燕河"],
        streets: &["凤城街道", "东城街道", "洲心街道", "横荷街道"],
        bridges: &["北江大桥", "清远大桥", "洲心大桥"],
        slopes: &["飞来峡镇山体", "源潭镇边坡"],
        forests: &["飞霞山", "银盏林场"],
    },
    District {
        name: "清新区",
        code: "qx",
        rivers: &["北江清新段", "滨江太和段"],
        streets: &["太和镇", "太平镇", "三坑镇", "山塘镇"],
        bridges: &["滨江大桥", "清新大桥"],
        slopes: &["石潭镇边坡", "浸潭镇山体"],
        forests: &["笔架山林场", "太和古洞"],
    },
    District {
        name: "英德市",
        code: "yd",
        rivers: &["北江英德段", "连江口", "滃江"],
        streets: &["英城街道", "大站镇", "浛洸镇"],
        bridges: &["英德北江大桥", "连江口大桥"],
        slopes: &["英西峰林边坡", "九龙镇山体"],
        forests: &["英西峰林", "石门台"],
    },
    District {
        name: "连州市",
        code: "lz",
        rivers: &["连江连州段", "湟川", "星子河"],
        streets: &["连州镇", "星子镇", "保安镇"],
        bridges: &["湟川大桥", "连州大桥"],
        slopes: &["大路边镇山体", "龙坪镇边坡"],
        forests: &["大东山", "地下河林区"],
    },
    District {
        name: "榕城区",
        code: "rc",
        rivers: &["榕江南河榕城段", "榕江北河"],
        streets: &["榕华街道", "新兴街道", "中山街道", "东兴街道"],
        bridges: &["揭阳大桥", "榕江大桥"],
        slopes: &["黄岐山边坡"],
        forests: &["黄岐山"],
    },
    District {
        name: "揭东区",
        code: "jd",
        rivers: &["榕江北河揭东段", "枫江"],
        streets: &["曲溪街道", "玉湖镇", "锡场镇"],
        bridges: &["枫江大桥", "揭东大桥"],
        slopes: &["玉湖镇山体", "埔田镇边坡"],
        forests: &["桑浦山", "玉湖林场"],
    },
    District {
        name: "普宁市",
        code: "pn",
        rivers: &["练江普宁段", "榕江南河上游"],
        streets: &["流沙街道", "池尾街道", "燎原街道"],
        bridges: &["练江大桥", "普宁大桥"],
        slopes: &["大南山边坡", "船埔镇山体"],
        forests: &["大南山", "乌犁山"],
    },
];

/// Picks the `n`-th place of a list, numbering repeats ("北江大桥 #2") so sites stay distinct
/// in large fleets.
pub(crate) fn nth_place(places: &[&str], n: usize) -> String {
    let len = places.len().max(1);
    let base = places.get(n % len).copied().unwrap_or("站点");
    match n / len {
        0 => base.to_string(),
        round => format!("{base} #{}", round + 1),
    }
}
